// Package healthcheck is kiln's opam-health-check: it builds every package of an opam
// repository (latest versions or all) against each configured switch, on the fleet,
// and keeps per run the state of each (package, switch) with its log, so runs can be
// shown as a matrix, compared and served as JSON.
package healthcheck

import (
	"time"

	"github.com/kiln-ci/kiln/opam"
)

// State is the outcome of one package on one switch, with the reference's names.
type State string

// The states of a result. Pending is a planned result not yet built.
const (
	Pending         State = "pending"
	Good            State = "good"
	Partial         State = "partial"          // a dependency failed to build
	Bad             State = "bad"              // the package itself failed
	NotAvailable    State = "not-available"    // no solution: not built
	InternalFailure State = "internal-failure" // the infrastructure failed, after retries
)

// States lists the states in the order pages show them.
var States = []State{Good, Partial, Bad, NotAvailable, InternalFailure, Pending}

// Failed reports whether the state is a failure of the package or of a dependency.
func (s State) Failed() bool { return s == Bad || s == Partial }

// Kind says more precisely why a result is not good.
type Kind string

// The kinds of failure. The infrastructure kinds are retried before a result is
// recorded as InternalFailure.
const (
	KindNone       Kind = ""
	KindSolver     Kind = "solver"      // no solution (NotAvailable)
	KindBuild      Kind = "build"       // the package's build or install failed
	KindTest       Kind = "test"        // the package's tests failed
	KindLowerBound Kind = "lower-bound" // it fails with its lowest dependencies
	KindDependency Kind = "dependency"  // a dependency failed (Partial)
	KindTimeout    Kind = "timeout"
	KindDiskFull   Kind = "disk-full"
	KindDownload   Kind = "download-failed"
	KindWorkerLost Kind = "worker-lost"
	KindInternal   Kind = "internal" // any other failure of kiln itself
)

// Infrastructure reports whether the kind is a failure of the infrastructure rather
// than of the package.
func (k Kind) Infrastructure() bool {
	switch k {
	case KindTimeout, KindDiskFull, KindDownload, KindWorkerLost, KindInternal:
		return true
	}
	return false
}

// BuildWith is how a switch builds packages.
type BuildWith string

// The ways to build.
const (
	BuildWithOpam BuildWith = "opam"
	BuildWithDune BuildWith = "dune"
)

// Switch is one column of the matrix: a compiler and how to build with it.
type Switch struct {
	Name      string    `json:"name" yaml:"name"`
	Compiler  string    `json:"compiler" yaml:"compiler"` // the compiler package, "ocaml-base-compiler.5.2.0"
	BuildWith BuildWith `json:"build_with,omitempty" yaml:"build-with"`
	// Repositories are opam repositories added to the followed one for this switch
	// (name=URL or name=path), in priority order.
	Repositories []string `json:"repositories,omitempty" yaml:"repositories"`
}

// RunKind tells a periodic run from a candidate run.
type RunKind string

// The kinds of run.
const (
	Baseline  RunKind = "baseline"
	Candidate RunKind = "candidate"
)

// RunStatus is where a run is.
type RunStatus string

// The statuses of a run.
const (
	RunPlanning  RunStatus = "planning"
	RunRunning   RunStatus = "running"
	RunDone      RunStatus = "done"
	RunFailed    RunStatus = "failed" // the run could not be planned or was stopped by an error
	RunCancelled RunStatus = "cancelled"
)

// Finished reports whether the run will not change any more.
func (s RunStatus) Finished() bool { return s == RunDone || s == RunFailed || s == RunCancelled }

// CandidateInfo is what a candidate run tests against its baseline.
type CandidateInfo struct {
	// Name is what the candidate is: a branch, "pr/123", "ocaml 5.3.0~beta1".
	Name string `json:"name"`
	// Baseline is the run the candidate is compared with.
	Baseline int64 `json:"baseline"`
	// Ref and Commit are the branch of the opam repository tested (empty when the
	// candidate only changes the switches or opam).
	Ref    string `json:"ref,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Scope is "revdeps" (the packages that changed and their reverse dependencies)
	// or "all".
	Scope string `json:"scope"`
	// Changed are the packages (name.version) the branch changes.
	Changed []string `json:"changed,omitempty"`
}

// Counts are the numbers of results in each state.
type Counts map[State]int

// Total is the number of results counted.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Run is one check of the repository at one commit.
type Run struct {
	ID     int64     `json:"id"`
	Kind   RunKind   `json:"kind"`
	Status RunStatus `json:"status"`
	// Message says why a run failed or was cancelled.
	Message string `json:"message,omitempty"`
	// Repository is the opam repository followed and Commit the commit checked,
	// fixed when the run starts.
	Repository string    `json:"repository"`
	Commit     string    `json:"commit"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished,omitzero"`
	Switches   []Switch  `json:"switches"`
	// AllVersions says every version was checked, not only the latest of each package.
	AllVersions bool           `json:"all_versions,omitempty"`
	Candidate   *CandidateInfo `json:"candidate,omitempty"`
	// Counts are the results by state, and BySwitch by switch name then state.
	Counts   Counts            `json:"counts"`
	BySwitch map[string]Counts `json:"by_switch,omitempty"`
	Progress Progress          `json:"progress"`
}

// Progress is how far a run is.
type Progress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
	// ETA is when the run should end at the rate so far (zero when unknown or done).
	ETA time.Time `json:"eta,omitzero"`
}

// LogRef names a result's log: Key in the run's log archive, and JobID, the engine
// job that built it (its log is on the console's job page while the job is kept).
type LogRef struct {
	Key   string `json:"key,omitempty"`
	JobID string `json:"job_id,omitempty"`
}

// LogKey is the key of a package's log on a switch in a run's log archive.
func LogKey(sw, pkg string) string { return sw + "/" + pkg }

// Result is one package version on one switch in one run.
type Result struct {
	Run     int64  `json:"run"`
	Package string `json:"package"` // name.version
	Switch  string `json:"switch"`
	State   State  `json:"state"`
	Kind    Kind   `json:"kind,omitempty"`
	// Message is a line on what went wrong; Lines are the log lines that say it.
	Message     string        `json:"message,omitempty"`
	Lines       []string      `json:"lines,omitempty"`
	Maintainers []string      `json:"maintainers,omitempty"`
	Revdeps     int           `json:"revdeps"` // packages that depend on this one, for sort-by-revdeps
	Attempts    int           `json:"attempts,omitempty"`
	Started     time.Time     `json:"started,omitzero"`
	Duration    time.Duration `json:"duration,omitempty"`
	Log         LogRef        `json:"log,omitzero"`
}

// Name is the package's name.
func (r Result) Name() string {
	p, _ := opam.ParsePackage(r.Package)
	return string(p.Name)
}

// Version is the package's version.
func (r Result) Version() string {
	p, _ := opam.ParsePackage(r.Package)
	return string(p.Version)
}
