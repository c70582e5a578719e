// Package baseimages makes the platforms' Debian base images in the builder's image
// store (the one the host's local workers use), one engine job each with its log,
// before the builds that need them.
package baseimages

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Maker makes Debian base images in an image store. The zero Heartbeat and Ensure
// mean every 30 s and the store's EnsureDebian.
type Maker struct {
	// Dir is the image store's folder.
	Dir string
	// Heartbeat is how often making an image logs that it goes on.
	Heartbeat time.Duration
	// Ensure makes the image in the store.
	Ensure func(*image.Store, context.Context, image.DebianOptions) (image.Base, error)
}

// Op is the operation, named name, that makes a Debian base image in the image
// store at dir unless it is there; its result is the image's local name. Two
// services making one image in one store make it once (the store locks).
func Op(name, dir string) *current.Op[image.DebianOptions, string] {
	return (&Maker{Dir: dir}).Op(name)
}

// Op is the operation, named name, that makes a Debian base image with m unless it is
// in the store; its result is the image's local name.
func (m *Maker) Op(name string) *current.Op[image.DebianOptions, string] {
	return &current.Op[image.DebianOptions, string]{
		Name: name,
		Key: func(o image.DebianOptions) string {
			n, _ := o.LocalName()
			return n
		},
		Label: func(o image.DebianOptions) string { return "base image " + o.Suite + " " + o.Arch },
		Run:   m.ensure,
	}
}

// heartbeat is how often making a base image says it is still at it, by default.
const heartbeat = 30 * time.Second

func (m *Maker) ensure(ctx context.Context, j *current.Job, o image.DebianOptions) (string, error) {
	st, err := image.Open(m.Dir)
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
	every, ensure := m.Heartbeat, m.Ensure
	if every <= 0 {
		every = heartbeat
	}
	if ensure == nil {
		ensure = (*image.Store).EnsureDebian
	}
	stop := logEvery(j, every, func(d time.Duration) string {
		note := ""
		if o.Arch != "" && o.Arch != runtime.GOARCH {
			note = "; " + o.Arch + " runs emulated by qemu, several times slower than natively"
		}
		return fmt.Sprintf("still making %s: %s so far (mmdebstrap installs the packages, then the image is stored)%s", name, d.Round(time.Second), note)
	})
	b, err := ensure(st, ctx, o)
	stop()
	if err != nil {
		return "", current.Infra(current.FailNetwork, fmt.Errorf("make base image %s: %w", name, err))
	}
	j.Logf("made %s (%s, %d MB)", name, b.ID, b.Size>>20)
	return name, nil
}

// logEvery logs line(time since start) to j every period until stop is called.
func logEvery(j *current.Job, period time.Duration, line func(time.Duration) string) (stop func()) {
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				j.Logf("%s", line(time.Since(start)))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
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
