package registry

import (
	"context"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

func TestPushLayout(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := randomImage(t)
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	imgD, _ := img.Digest()
	idxD, _ := idx.Digest()
	repo := reg.Repo("layout/a")
	got, err := c.PushLayout(ctx, repo, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != imgD || got[1] != idxD {
		t.Fatalf("PushLayout = %v, want [%s %s]", got, imgD, idxD)
	}
	im, _ := idx.IndexManifest()
	want := []v1.Hash{imgD, idxD}
	for _, m := range im.Manifests {
		want = append(want, m.Digest)
	}
	for _, d := range want {
		t.Run(d.Hex[:12], func(t *testing.T) {
			if _, err := c.Digest(ctx, repo+"@"+d.String()); err != nil {
				t.Errorf("%s is not in the registry: %v", d, err)
			}
		})
	}
}
