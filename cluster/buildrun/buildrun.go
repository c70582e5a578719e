// Package buildrun lets fleet workers run jobs with the sandboxed builder: a job's spec
// text is an OBuilder spec, its source tree the build context. Builds for a foreign
// architecture (a linux-arm64 pool on an x86_64 host) run under qemu-user emulation
// through binfmt_misc, given a base image of that architecture.
package buildrun

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/cluster"
)

// Options configure a builder runner.
type Options struct {
	Root       string // the builder's root (store, caches, sandbox state)
	Images     string // image store folder; "" is Root/images
	HealthBase string // image the health check builds on; "" skips the build part of the check
	Budget     int64  // snapshot store size that pruning keeps (bytes); 0 prunes only for free space
	// Limits of each run step (builder.Options.Limits: zero fields take the builder's defaults).
	Limits sandbox.Limits
}

// Runner runs builder specs; it implements cluster.Runner, HealthChecker and Pruner.
type Runner struct {
	o Options
	b *builder.Builder
}

// New opens the builder.
func New(o Options) (*Runner, error) {
	bo := builder.Options{Root: o.Root, Limits: o.Limits}
	if o.Images != "" {
		st, err := image.Open(o.Images)
		if err != nil {
			return nil, fmt.Errorf("image store %s: %w", o.Images, err)
		}
		bo.Images = st
	}
	b, err := builder.New(bo)
	if err != nil {
		return nil, err
	}
	return &Runner{o: o, b: b}, nil
}

// Run implements cluster.Runner: a spec that does not parse, or a build that fails, is
// the build's fault; the builder's infrastructure errors are marked as such.
func (r *Runner) Run(ctx context.Context, t cluster.Task, log io.Writer) (string, error) {
	s, err := spec.Parse("job "+t.ID, []byte(t.Spec))
	if err != nil {
		fmt.Fprintf(log, "spec error: %v\n", err)
		return "", err
	}
	id, err := r.b.Build(ctx, s, builder.BuildContext{Dir: t.Context, Secrets: t.Secrets}, log)
	if err != nil {
		if builder.IsInfrastructure(err) {
			return "", cluster.Infrastructure(err)
		}
		return "", err
	}
	return id, nil
}

// Health implements cluster.HealthChecker with the builder's own check.
func (r *Runner) Health(ctx context.Context) error {
	if r.o.HealthBase == "" {
		if _, err := os.Stat(r.b.Store().Root()); err != nil {
			return fmt.Errorf("builder store: %w", err)
		}
		return nil
	}
	return r.b.Health(ctx, r.o.HealthBase)
}

// Prune implements cluster.Pruner with the builder's garbage collection.
func (r *Runner) Prune(ctx context.Context) error {
	_, err := r.b.GC(ctx, builder.GCOptions{Budget: r.o.Budget})
	return err
}
