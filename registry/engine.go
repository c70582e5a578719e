package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-ci/kiln/builder/docker"
)

// PushFromEngine uploads the image that a Docker engine knows as image (a tag or an
// id) to repo by digest, without a tag, and returns the manifest digest. The engine's
// export (`docker save`) is read once, as a stream: each layer is compressed and
// uploaded as it arrives, without a copy on disk. Layers are uploaded even when the
// registry has them (their digest is known only once they are compressed).
func (c *Client) PushFromEngine(ctx context.Context, e *docker.Engine, image, repo string) (v1.Hash, error) {
	r, err := c.repository("push", repo)
	if err != nil {
		return v1.Hash{}, err
	}
	start, before := time.Now(), c.Uploaded()
	fail := func(err error) (v1.Hash, error) {
		return v1.Hash{}, c.fail("push", r, fmt.Errorf("image %s of the engine: %w", image, err))
	}
	inspect, err := engineOutput(ctx, e, "image", "inspect", "--format", "{{.Id}}{{range .RootFS.Layers}} {{.}}{{end}}", image)
	if err != nil {
		return fail(err)
	}
	var ids []v1.Hash
	for _, f := range strings.Fields(inspect) {
		h, err := v1.NewHash(f)
		if err != nil {
			return fail(fmt.Errorf("docker image inspect: %w", err))
		}
		ids = append(ids, h)
	}
	if len(ids) == 0 {
		return fail(errors.New("docker image inspect: no image id"))
	}
	configID, diffIDs := ids[0], ids[1:]
	cmd := engineCommand(ctx, e, "save", image)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("docker save: %w", err))
	}
	config, layers, err := c.uploadExport(ctx, r, out, configID, diffIDs)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return fail(err)
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fail(fmt.Errorf("docker save: %v: %s", err, strings.TrimSpace(stderr.String())))
	}
	m, err := engineManifest(config, configID, layers)
	if err != nil {
		return fail(err)
	}
	if err := remote.WriteLayer(r, static.NewLayer(config, types.DockerConfigJSON), c.remote(ctx)...); err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	d, err := c.putManifest(ctx, r, rawManifest{raw: m, mediaType: types.DockerManifestSchema2})
	if err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	c.ok("push")
	c.log.Info("pushed image from engine", "image", image, "repository", r.Name(), "digest", d, "uploaded_bytes", c.Uploaded()-before, "duration", time.Since(start))
	return d, nil
}

// uploadExport reads an engine's export (the legacy layout: ID.json and
// DIR/layer.tar, or the OCI layout: blobs/sha256/HEX), uploads its layers to r and
// returns the image's configuration and its layers by diff id. The layers of an OCI
// export are the blobs named by the image's diff ids (they are uncompressed).
func (c *Client) uploadExport(ctx context.Context, repo name.Repository, export io.Reader, configID v1.Hash, diffIDs []v1.Hash) ([]byte, map[v1.Hash]v1.Descriptor, error) {
	tr := tar.NewReader(export)
	var config []byte
	layers := map[v1.Hash]v1.Descriptor{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read the export: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		base := path.Base(hdr.Name)
		switch {
		case strings.TrimSuffix(base, ".json") == configID.Hex:
			if config, err = io.ReadAll(tr); err != nil {
				return nil, nil, fmt.Errorf("read the configuration: %w", err)
			}
		case base == "layer.tar" || slices.Contains(diffIDs, v1.Hash{Algorithm: "sha256", Hex: base}):
			l := stream.NewLayer(io.NopCloser(tr))
			if err := remote.WriteLayer(repo, l, c.remote(ctx)...); err != nil {
				return nil, nil, fmt.Errorf("layer %s: %w", hdr.Name, err)
			}
			diffID, _ := l.DiffID()
			digest, _ := l.Digest()
			size, _ := l.Size()
			layers[diffID] = v1.Descriptor{MediaType: types.DockerLayer, Size: size, Digest: digest}
		}
	}
	if config == nil {
		return nil, nil, fmt.Errorf("the export has no configuration %s", configID)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(config)); h != configID {
		return nil, nil, fmt.Errorf("the export's configuration has digest %s, not %s", h, configID)
	}
	return config, layers, nil
}

// engineManifest is the image manifest of config, its layers in the order of its
// diff ids.
func engineManifest(config []byte, configID v1.Hash, layers map[v1.Hash]v1.Descriptor) ([]byte, error) {
	cf, err := v1.ParseConfigFile(bytes.NewReader(config))
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(config)), Digest: configID},
	}
	for _, diffID := range cf.RootFS.DiffIDs {
		l, ok := layers[diffID]
		if !ok {
			return nil, fmt.Errorf("the export has no layer %s", diffID)
		}
		m.Layers = append(m.Layers, l)
	}
	return json.Marshal(m)
}

// engineCommand is a docker command against e.
func engineCommand(ctx context.Context, e *docker.Engine, args ...string) *exec.Cmd {
	bin := e.Bin
	if bin == "" {
		bin = "docker"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = os.Environ()
	if e.Host != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+e.Host)
	}
	cmd.Env = append(cmd.Env, e.Env...)
	return cmd
}

func engineOutput(ctx context.Context, e *docker.Engine, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := engineCommand(ctx, e, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
