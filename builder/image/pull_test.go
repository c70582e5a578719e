package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func layerOf(t *testing.T, buf *bytes.Buffer) v1.Layer {
	t.Helper()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pushTestImage pushes a two-layer image to a registry served on loopback and returns
// its reference and manifest digest.
func pushTestImage(t *testing.T) (string, string, func()) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(nopLogger())))
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := mutate.AppendLayers(empty.Image,
		layerOf(t, tarOf(t,
			entry{name: "etc/", typ: tar.TypeDir},
			entry{name: "etc/os-release", body: "ID=test\n"},
			entry{name: "etc/secret", body: "lower"},
			entry{name: "usr/bin/", typ: tar.TypeDir},
			entry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
			entry{name: "usr/bin/hello", body: "#!/bin/sh\necho hello\n", mode: 0o755},
			entry{name: "var/cache/", typ: tar.TypeDir},
			entry{name: "var/cache/old", body: "old"},
		)),
		layerOf(t, tarOf(t,
			entry{name: "etc/.wh.secret"},
			entry{name: "var/cache/", typ: tar.TypeDir},
			entry{name: "var/cache/.wh..wh..opq"},
			entry{name: "var/cache/fresh", body: "fresh"},
		)),
	)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/bin:/bin", "GREETING=hi"}
	cf.Config.WorkingDir = "/work"
	cf.Config.User = "1000:1000"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/test/base:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	dig, _ := img.Digest()
	return ref, dig.String(), srv.Close
}

func TestPullFromRegistry(t *testing.T) {
	ref, digest, stop := pushTestImage(t)
	defer stop()
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st.Arch = "amd64"
	var log bytes.Buffer
	st.Progress = NewProgress(&log)
	ctx := context.Background()
	b, err := st.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != digest {
		t.Errorf("id = %s, want the manifest digest %s", b.ID, digest)
	}
	if got := readFile(t, filepath.Join(b.Rootfs, "bin/hello")); !strings.Contains(got, "echo hello") {
		t.Errorf("bin/hello = %q", got)
	}
	if exists(filepath.Join(b.Rootfs, "etc/secret")) {
		t.Error("whiteout in the upper layer did not delete etc/secret")
	}
	if exists(filepath.Join(b.Rootfs, "var/cache/old")) || !exists(filepath.Join(b.Rootfs, "var/cache/fresh")) {
		t.Error("opaque directory not applied")
	}
	if b.Config.Workdir != "/work" || b.Config.User != "1000:1000" || len(b.Config.Env) != 2 || b.Config.Env[1] != "GREETING=hi" {
		t.Errorf("config = %+v", b.Config)
	}
	if !strings.Contains(log.String(), "pull "+ref+" (2 layers)") || !strings.Contains(log.String(), "done in") {
		t.Errorf("progress lines:\n%s", log.String())
	}
	// Resolved again with the registry gone: served from the store.
	stop()
	b2, err := st.Resolve(ctx, ref)
	if err != nil || b2.ID != b.ID {
		t.Fatalf("offline resolve: %+v, %v", b2, err)
	}
	// By digest too, from a fresh store handle (no in-process state).
	st2, _ := Open(st.Root())
	st2.Arch = "amd64"
	if _, err := st2.Resolve(ctx, ref); err != nil {
		t.Fatalf("reopened store: %v", err)
	}
	if _, err := st2.Resolve(ctx, strings.Replace(ref, ":v1", ":missing", 1)); err == nil {
		t.Error("unknown tag resolved with the registry gone")
	}
}

func TestPullByDigestAndBadRefs(t *testing.T) {
	ref, digest, stop := pushTestImage(t)
	defer stop()
	st, _ := Open(t.TempDir())
	st.Arch = "amd64"
	byDigest := strings.TrimSuffix(ref, ":v1") + "@" + digest
	b, err := st.Resolve(context.Background(), byDigest)
	if err != nil || b.ID != digest {
		t.Fatalf("by digest: %+v, %v", b, err)
	}
	if _, err := st.Resolve(context.Background(), "UPPER CASE/bad ref"); err == nil || !strings.Contains(err.Error(), "image reference") {
		t.Errorf("bad ref: %v", err)
	}
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }
