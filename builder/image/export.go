package image

import (
	"archive/tar"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"path/filepath"
	"strings"
	"time"
)

// ExportDocker writes the base that ref names as a Docker image archive, the format of
// `docker save` that `docker load` reads: one layer holding the root filesystem, the
// base's config, and the tag ref for local names (kiln/debian:bookworm) and registry
// tags, so that a Dockerfile's FROM ref finds it. The layer is made with GNU tar
// (owners, modes, devices, hard links and extended attributes kept).
func (s *Store) ExportDocker(ctx context.Context, ref string, w io.Writer) error {
	b, err := s.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	layer, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "export-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	h := sha256.New()
	if err := b.Tar(ctx, io.MultiWriter(layer, h), true); err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	size, err := layer.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return err
	}
	layerHex := hex.EncodeToString(h.Sum(nil))
	arch := b.Config.Arch
	if arch == "" {
		arch = s.Arch
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           "linux",
		"created":      b.Created.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Env":        b.Config.Env,
			"WorkingDir": b.Config.Workdir,
			"User":       b.Config.User,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerHex}},
		"history": []map[string]string{{"created_by": "kiln base " + ref + " (" + b.ID + ")"}},
	})
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	layerName := layerHex + "/layer.tar"
	entry := map[string]any{"Config": cfgName, "RepoTags": []string{}, "Layers": []string{layerName}}
	if tag := dockerTag(ref); tag != "" {
		entry["RepoTags"] = []string{tag}
	}
	manifest, err := json.Marshal([]any{entry})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	mtime := b.Created.UTC()
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: layerHex + "/", Mode: 0o755, ModTime: mtime}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: layerName, Mode: 0o644, Size: size, ModTime: mtime}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{cfgName, cfg}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dockerTag is the tag an exported base gets: its local name, or its registry
// reference when that is a tag (not a digest, not a file).
func dockerTag(ref string) string {
	switch kind, arg := classify(ref); kind {
	case refLocal:
		return arg
	case refRegistry:
		if !strings.Contains(ref, "@") {
			return ref
		}
	}
	return ""
}
