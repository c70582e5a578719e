package registry

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/registry/registrytest"
)

// TestPushFromEngine builds images with a real Docker engine, pushes them with
// PushFromEngine and reads them back from the registry: the configuration is the
// engine's (same image id), every layer's digest and diff id check out, in order.
func TestPushFromEngine(t *testing.T) {
	engine := dockertest.Engine(t)
	c, reg := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	for f, text := range map[string]string{"a": "first file\n", "b": "second file\n"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, dockerfile string
		layers           int
	}{
		{"layers", "FROM scratch\nCOPY a /a\nCOPY b /b\nLABEL x=y\n", 2},
		// The third layer is the first's again: the export has it once.
		{"repeated layer", "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY a /a\n", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := "kiln-registry-test/" + strings.ReplaceAll(tc.name, " ", "-") + ":latest"
			if err := engine.BuildDockerfile(ctx, tc.dockerfile, dir, tag, nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { engineOutput(context.Background(), engine, "image", "rm", "-f", tag) })
			id, err := engineOutput(ctx, engine, "image", "inspect", "--format", "{{.Id}}", tag)
			if err != nil {
				t.Fatal(err)
			}
			repo := reg.Repo("engine/" + strings.ReplaceAll(tc.name, " ", "-"))
			d, err := c.PushFromEngine(ctx, engine, tag, repo)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := name.ParseReference(repo+"@"+d.String(), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(ref, c.remote(ctx)...)
			if err != nil {
				t.Fatal(err)
			}
			checkLayers(t, img)
			if cn, _ := img.ConfigName(); cn.String() != strings.TrimSpace(id) {
				t.Errorf("pushed configuration %s, engine's image id %s", cn, strings.TrimSpace(id))
			}
			if ls, _ := img.Layers(); len(ls) != tc.layers {
				t.Errorf("%d layers pushed, want %d", len(ls), tc.layers)
			}
		})
	}
}

// TestPushFromEngineErrors: an image the engine does not have and an unreachable
// registry are errors naming what was wrong.
func TestPushFromEngineErrors(t *testing.T) {
	engine := dockertest.Engine(t)
	c, reg := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tag := "kiln-registry-test/errors:latest"
	if err := engine.BuildDockerfile(ctx, "FROM scratch\nCOPY a /a\n", writeDir(t, "a"), tag, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engineOutput(context.Background(), engine, "image", "rm", "-f", tag) })
	for _, tc := range []struct {
		name, image, repo string
		want              error
		says              string
	}{
		{"unknown image", "kiln-registry-test/none:latest", reg.Repo("engine/errors"), nil, "kiln-registry-test/none:latest"},
		{"unreachable registry", tag, registrytest.RefusedAddr(t) + "/engine/errors", ErrUnreachable, "engine/errors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.PushFromEngine(ctx, engine, tc.image, tc.repo)
			if err == nil {
				t.Fatal("PushFromEngine succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("PushFromEngine = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not name %s", err, tc.says)
			}
		})
	}
}

func writeDir(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(file+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkLayers reads every layer of img from the registry and checks its digest and
// diff id against its contents.
func checkLayers(t *testing.T, img v1.Image) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		for _, side := range []struct {
			what string
			want func() (v1.Hash, error)
			open func() (io.ReadCloser, error)
		}{{"digest", l.Digest, l.Compressed}, {"diff id", l.DiffID, l.Uncompressed}} {
			want, err := side.want()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := side.open()
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := v1.SHA256(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			if got != want {
				t.Errorf("layer %d: %s %s, contents hash to %s", i, side.what, want, got)
			}
		}
	}
}
