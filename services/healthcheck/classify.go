package healthcheck

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/kiln-ci/kiln/current"
)

// markerPrefix starts the lines a build's steps print when they fail, naming the
// step: "kiln-health-check: FAILED dependency dune.3.17.0 (exit 31)".
const markerPrefix = "kiln-health-check: FAILED "

// The steps of a build, as the failure lines name them.
const (
	stepDependency = "dependency"
	stepBuild      = "build"
	stepTest       = "tests"
	stepLowerBound = "lower-bounds"
)

var (
	markerLine = regexp.MustCompile(`^` + regexp.QuoteMeta(markerPrefix) + `(\S+) (\S+) \(exit (\d+)\)`)
	// opam's line for each package that failed: "#=== ERROR while installing foo.1.0 ===".
	opamError = regexp.MustCompile(`#=== ERROR while (?:installing|compiling|removing) (\S+?)\.?\s*=+`)
	diskFull  = regexp.MustCompile(`(?i)no space left on device|disk quota exceeded`)
	// Sources opam could not download: a failure of the network or of the upstream,
	// not of the package's build.
	downloadFailed = regexp.MustCompile(`(?i)failed to get sources of|download failed|curl: \(\d+\)|could not resolve host|connection timed out`)
)

// Scan is what a build's log says about its failure, read line by line as it streams.
type Scan struct {
	// Step is the step whose failure line was printed ("" when none was), Package
	// the package it installed and Exit opam's exit status.
	Step    string
	Package string
	Exit    int
	// Failed are the packages opam reported failing ("ERROR while installing").
	Failed   []string
	DiskFull bool
	Download bool
	// Built and Cached count the builder's steps run and taken from its cache.
	Built, Cached int
}

// Line reads one line of the log.
func (s *Scan) Line(l []byte) {
	switch {
	case bytes.HasPrefix(l, []byte("---> saved as ")):
		s.Built++
	case bytes.HasPrefix(l, []byte("---> using ")):
		s.Cached++
	case bytes.HasPrefix(l, []byte(markerPrefix)):
		if m := markerLine.FindSubmatch(l); m != nil && s.Step == "" {
			s.Step, s.Package = string(m[1]), string(m[2])
			s.Exit, _ = strconv.Atoi(string(m[3]))
		}
	case bytes.Contains(l, []byte("ERROR while")):
		if m := opamError.FindSubmatch(l); m != nil && len(s.Failed) < 100 {
			s.Failed = append(s.Failed, string(m[1]))
		}
	case !s.DiskFull && (bytes.Contains(l, []byte("pace left")) || bytes.Contains(l, []byte("quota"))) && diskFull.Match(l):
		s.DiskFull = true
	case !s.Download && mayBeDownload(l) && downloadFailed.Match(l):
		s.Download = true
	}
}

// mayBeDownload is a cheap test that a line may say a download failed, so that the
// expression only reads the few lines that might.
func mayBeDownload(l []byte) bool {
	for _, w := range []string{"sources", "ownload", "curl", "resolve", "timed out"} {
		if bytes.Contains(l, []byte(w)) {
			return true
		}
	}
	return false
}

// Verdict is a build's outcome as recorded.
type Verdict struct {
	State   State
	Kind    Kind
	Message string
}

// Retry reports whether the build is worth trying again: the infrastructure failed.
func (v Verdict) Retry() bool { return v.State == InternalFailure }

// Classify says what a build of pkg ended as, from the error of its fleet job (nil
// when it passed) and what its log said, with the reference's rules: opam's exit 20
// (no solution) is not available, 31 (a build error) is bad, or partial when the
// package that failed is a dependency; anything else is an internal failure. The
// infrastructure's failures (timeout, disk full, download, lost worker) are told
// apart, to be retried.
func Classify(pkg string, err error, s Scan) Verdict {
	if err == nil {
		return Verdict{State: Good}
	}
	msg := firstLine(err.Error())
	if k := current.KindOf(err); k.Infrastructure() {
		switch {
		case strings.Contains(msg, "timed out"):
			return Verdict{InternalFailure, KindTimeout, msg}
		case s.DiskFull || diskFull.MatchString(msg):
			return Verdict{InternalFailure, KindDiskFull, msg}
		case k == current.FailNetwork && s.Step == "":
			return Verdict{InternalFailure, KindDownload, msg}
		}
		return Verdict{InternalFailure, KindWorkerLost, msg}
	}
	if s.DiskFull {
		return Verdict{InternalFailure, KindDiskFull, "no space left on device"}
	}
	switch {
	case s.Step == "":
		// It failed before any package step: the switch could not be made.
		if s.Download {
			return Verdict{InternalFailure, KindDownload, msg}
		}
		return Verdict{InternalFailure, KindInternal, "the switch could not be set up: " + msg}
	case s.Exit == 20:
		return Verdict{NotAvailable, KindSolver, fmt.Sprintf("opam found no solution to install %s", s.Package)}
	case s.Download && (s.Exit == 40 || len(s.Failed) == 0):
		return Verdict{InternalFailure, KindDownload, fmt.Sprintf("the sources of %s could not be downloaded", s.Package)}
	case s.Step == stepDependency:
		return Verdict{Partial, KindDependency, fmt.Sprintf("dependency %s failed", s.Package)}
	case s.Exit != 31 && s.Exit != 1:
		return Verdict{InternalFailure, KindInternal, fmt.Sprintf("opam exited with %d in the %s step", s.Exit, s.Step)}
	}
	for _, f := range s.Failed {
		if f != pkg && !strings.HasPrefix(pkg, f+".") {
			return Verdict{Partial, KindDependency, fmt.Sprintf("dependency %s failed", f)}
		}
	}
	switch s.Step {
	case stepTest:
		return Verdict{Bad, KindTest, fmt.Sprintf("the tests of %s failed", pkg)}
	case stepLowerBound:
		return Verdict{Bad, KindLowerBound, fmt.Sprintf("%s fails with its lowest dependencies", pkg)}
	}
	return Verdict{Bad, KindBuild, fmt.Sprintf("%s failed to build", pkg)}
}
