// Package baseimages makes the platforms' Debian base images in the builder's image
// store (the one the host's local workers use), one engine job each with its log,
// before the builds that need them.
package baseimages

import (
	"context"
	"fmt"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Op is the operation, named name, that makes a Debian base image in the image
// store at dir unless it is there; its result is the image's local name. Two
// services making one image in one store make it once (the store locks).
func Op(name, dir string) *current.Op[image.DebianOptions, string] {
	return &current.Op[image.DebianOptions, string]{
		Name: name,
		Key: func(o image.DebianOptions) string {
			n, _ := o.LocalName()
			return n
		},
		Label: func(o image.DebianOptions) string { return "base image " + o.Suite + " " + o.Arch },
		Run: func(ctx context.Context, j *current.Job, o image.DebianOptions) (string, error) {
			return ensure(ctx, j, dir, o)
		},
	}
}

func ensure(ctx context.Context, j *current.Job, dir string, o image.DebianOptions) (string, error) {
	st, err := image.Open(dir)
	if err != nil {
		return "", current.Infra(current.FailDiskFull, err)
	}
	st.Progress = image.NewProgress(j)
	name, err := o.LocalName()
	if err != nil {
		return "", err
	}
	if b, err := st.Resolve(ctx, name); err == nil {
		j.Logf("%s is in the store (%s)", name, b.ID)
		return name, nil
	}
	j.Logf("making %s with mmdebstrap (%s)", name, o.Recipe())
	b, err := st.EnsureDebian(ctx, o)
	if err != nil {
		return "", current.Infra(current.FailNetwork, fmt.Errorf("make base image %s: %w", name, err))
	}
	j.Logf("made %s (%s, %d MB)", name, b.ID, b.Size>>20)
	return name, nil
}

// Ready is ready once op has made the base image of every platform made from the
// Debian mirror (at once when there is none).
func Ready(op *current.Op[image.DebianOptions, string], platforms []matrix.Platform) current.Term[current.Unit] {
	var bases []current.AnyTerm
	seen := map[string]bool{}
	for _, p := range platforms {
		if p.Debian == nil || seen[p.Image] {
			continue
		}
		seen[p.Image] = true
		bases = append(bases, current.Do(op, current.Return(*p.Debian)))
	}
	if len(bases) == 0 {
		return current.Return(current.Unit{})
	}
	return current.All(bases...).Named("base images")
}
