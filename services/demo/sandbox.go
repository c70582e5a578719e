package demo

import (
	"context"
	"fmt"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/current"
)

// SandboxRunner runs steps in the sandboxed builder: the checkout is copied into a
// container made from Image and the script runs there, without network.
type SandboxRunner struct {
	Builder *builder.Builder
	Image   string // a base image reference, e.g. kiln/debian
}

// Spec is the build spec that runs s: the checkout copied to /src, then the script.
func (r SandboxRunner) Spec(s Step) (*spec.Spec, error) {
	sp := &spec.Spec{From: r.Image, Ops: []spec.Op{
		spec.Workdir{Path: "/src"},
		spec.Copy{Src: []string{"."}, Dst: "/src/"},
		spec.Run{Shell: s.Script},
	}}
	if err := sp.Validate(); err != nil {
		return nil, fmt.Errorf("demo spec for %s: %w", s.Name, err)
	}
	return sp, nil
}

// Run builds the spec of s with the step's checkout as the build context.
func (r SandboxRunner) Run(ctx context.Context, j *current.Job, s Step) error {
	sp, err := r.Spec(s)
	if err != nil {
		return err
	}
	j.Logf("\x1b[1m# %s\x1b[0m (sandboxed, from %s)", s.Name, r.Image)
	if _, err := r.Builder.Build(ctx, sp, builder.BuildContext{Dir: s.Dir}, j); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if builder.IsInfrastructure(err) {
			return current.Infra(current.FailWorkerLost, fmt.Errorf("%s: %w", s.Name, err))
		}
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}
