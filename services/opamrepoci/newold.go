package opamrepoci

import (
	"fmt"
	"strings"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

// Verdict says whose a failing job's failure is, by building the same job against
// the base branch.
type Verdict string

// The verdicts of a failure.
const (
	// NewFailure: the job passes on the base branch, or has no counterpart there (the
	// package version is new): the pull request broke it.
	NewFailure Verdict = "new"
	// BaseFailure: the job fails on the base branch too; not the pull request's fault.
	BaseFailure Verdict = "base"
	// Comparing: the job's build on the base branch is not finished.
	Comparing Verdict = "comparing"
)

// Label is the verdict as people read it.
func (v Verdict) Label() string {
	switch v {
	case NewFailure:
		return "new in this PR"
	case BaseFailure:
		return "also fails on master"
	case Comparing:
		return "checking whether it also fails on master"
	}
	return ""
}

// BaseJob is the job that tells whether a failure of j is new: the same job against
// the base branch. A reverse dependency is built with its tests without the pull
// request's package; a job of a package version the base branch lacks has no
// counterpart (ok false): its failures are new. kinds are the pull request's changes
// by package.
func BaseJob(j Job, kinds map[string]prdiff.Kind) (Job, bool) {
	if j.Kind == Revdep {
		b := Job{Package: j.Revdep, Group: j.Group, Label: j.Label, Platform: j.Platform, Kind: Tests, AcceptFailure: j.AcceptFailure}
		b.Path = []string{j.Revdep.String(), string(j.Group), j.Label, string(Tests)}
		return b, true
	}
	switch kinds[j.Package.String()] {
	case prdiff.NewPackage, prdiff.NewRelease:
		return Job{}, false
	}
	return j, true
}

// Outcome is what became of one job of a pull request.
type Outcome struct {
	Job   Job         `json:"job"`
	State forge.State `json:"state"`
	// Verdict is set on failures (State forge.Failed).
	Verdict Verdict  `json:"verdict,omitempty"`
	Message string   `json:"message,omitempty"`
	Lines   []string `json:"lines,omitempty"`
	URL     string   `json:"url,omitempty"`
}

// Counts is the tally of a pull request's jobs that its status gives.
type Counts struct {
	// Failed counts the failures that are the pull request's: new ones, of jobs that
	// do not accept failures.
	Failed int `json:"failed"`
	// OnBase counts the failures that happen on the base branch too, Accepted those of
	// jobs that accept failures (x-ci-accept-failures); neither fails the pull request.
	OnBase   int `json:"on_base"`
	Accepted int `json:"accepted"`
	Errored  int `json:"errored"` // the infrastructure's failures
	Skipped  int `json:"skipped"`
	Passed   int `json:"passed"`
	// Pending counts the jobs not finished, and failures still being compared with
	// the base branch.
	Pending   int `json:"pending"`
	Cancelled int `json:"cancelled"`
}

// Count tallies outcomes; skipped is the number of jobs the plan left out.
func Count(outs []Outcome, skipped int) Counts {
	c := Counts{Skipped: skipped}
	for _, o := range outs {
		switch {
		case o.State == forge.Failed && o.Job.AcceptFailure:
			c.Accepted++
		case o.State == forge.Failed && o.Verdict == NewFailure:
			c.Failed++
		case o.State == forge.Failed && o.Verdict == BaseFailure:
			c.OnBase++
		case o.State == forge.Failed:
			c.Pending++
		case o.State == forge.Error:
			c.Errored++
		case o.State == forge.Passed:
			c.Passed++
		case o.State == forge.Cancelled:
			c.Cancelled++
		default:
			c.Pending++
		}
	}
	return c
}

// State is the pull request's state by its counts: failed when a failure is its own,
// running while something is pending, error when the infrastructure failed a job,
// cancelled, or passed.
func (c Counts) State() forge.State {
	switch {
	case c.Failed > 0:
		return forge.Failed
	case c.Pending > 0:
		return forge.Running
	case c.Errored > 0:
		return forge.Error
	case c.Cancelled > 0:
		return forge.Cancelled
	}
	return forge.Passed
}

// Title is the status's description: "N jobs failed, M skipped, K passed", then what
// else there is.
func (c Counts) Title() string {
	t := fmt.Sprintf("%d %s failed, %d skipped, %d passed", c.Failed, plural(c.Failed, "job", "jobs"), c.Skipped, c.Passed)
	var more []string
	for _, x := range []struct {
		n    int
		what string
	}{{c.OnBase, "also failing on master"}, {c.Accepted, "allowed to fail"}, {c.Errored, "errored"},
		{c.Pending, "running"}, {c.Cancelled, "cancelled"}} {
		if x.n > 0 {
			more = append(more, fmt.Sprintf("%d %s", x.n, x.what))
		}
	}
	if len(more) > 0 {
		t += " (" + strings.Join(more, ", ") + ")"
	}
	return t
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
