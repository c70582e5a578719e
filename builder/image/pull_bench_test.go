package image_test

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
)

// BenchmarkPullDebian pulls the Debian minbase tree, pushed as a one-layer image to a
// registry on loopback, into an empty store: download, gunzip, unpack.
func BenchmarkPullDebian(b *testing.B) {
	base := imagetest.Debian(b)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		cmd := exec.Command("tar", "-C", base.Rootfs, "--numeric-owner", "-cf", "-", ".")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return waitCloser{out, cmd}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		b.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/bench/debian:bookworm"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		b.Fatal(err)
	}
	size, _ := layer.Size()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		st, err := image.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Resolve(context.Background(), ref); err != nil {
			b.Fatal(err)
		}
	}
}

type waitCloser struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (w waitCloser) Close() error {
	w.ReadCloser.Close()
	return w.cmd.Wait()
}
