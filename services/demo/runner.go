package demo

import (
	"context"
	"fmt"
	"os"

	"github.com/kiln-ci/kiln/current"
)

// Step is one piece of work of a demo job: a shell script run in a checkout.
type Step struct {
	Name   string // for the log
	Dir    string // the checkout, on the host
	Script string // run by /bin/sh -e
}

// Runner runs demo steps, writing their output to the job's log. HostRunner runs them
// on this machine; a sandboxed runner can take its place.
type Runner interface {
	Run(ctx context.Context, j *current.Job, s Step) error
}

// HostRunner runs steps as host processes, each in its own process group so that a
// cancel kills everything the script started.
type HostRunner struct{}

// Run runs s.Script with /bin/sh in s.Dir.
func (HostRunner) Run(ctx context.Context, j *current.Job, s Step) error {
	j.Logf("\x1b[1m# %s\x1b[0m (on the host, in %s)", s.Name, s.Dir)
	c := j.Command(ctx, "/bin/sh", "-ec", s.Script)
	c.Dir = s.Dir
	c.Env = append(os.Environ(), "KILN_JOB="+j.ID())
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}
