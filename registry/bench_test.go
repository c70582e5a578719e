package registry

import (
	"context"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/registry/registrytest"
)

// BenchmarkPushDebian assembles the test Debian base (bookworm minbase) and pushes
// it: a first push to a new repository (every blob uploaded), then re-pushes of the
// unchanged image (nothing uploaded). Assembling fails the benchmark when two runs
// give different digests.
func BenchmarkPushDebian(b *testing.B) {
	base := imagetest.Debian(b)
	reg := registrytest.Shared(b)
	c, err := New(Options{Credentials: Credentials{reg.Username, reg.Password}, Insecure: true, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	assemble := func(b *testing.B) (*Assembly, v1.Hash) {
		a, err := Assemble(ctx, RootfsOf(base), ConfigOf(base), AssembleOptions{TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		d, err := a.Image.Digest()
		if err != nil {
			b.Fatal(err)
		}
		return a, d
	}
	a, want := assemble(b)
	defer a.Close()
	layers, _ := a.Image.Layers()
	size, _ := layers[0].Size()
	b.Run("assemble", func(b *testing.B) {
		for b.Loop() {
			a2, d := assemble(b)
			a2.Close()
			if d != want {
				b.Fatalf("assembling the same base again gave %s, first %s", d, want)
			}
		}
		b.ReportMetric(float64(size), "layer-bytes")
	})
	n := 0
	b.Run("push", func(b *testing.B) {
		before := c.Uploaded()
		for b.Loop() {
			n++
			if _, err := c.Push(ctx, reg.Repo(fmt.Sprintf("bench/debian-%d", n)), a.Image); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(c.Uploaded()-before)/float64(b.N), "uploaded-bytes/op")
	})
	b.Run("repush", func(b *testing.B) {
		repo := reg.Repo("bench/debian-1")
		if _, err := c.Push(ctx, repo, a.Image); err != nil {
			b.Fatal(err)
		}
		before := c.Uploaded()
		for b.Loop() {
			if _, err := c.Push(ctx, repo, a.Image); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(c.Uploaded()-before)/float64(b.N), "uploaded-bytes/op")
	})
}
