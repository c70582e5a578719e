package healthcheck

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current"
)

func scanOf(log string) Scan {
	var s Scan
	for _, l := range strings.Split(log, "\n") {
		s.Line([]byte(l))
	}
	return s
}

func TestClassify(t *testing.T) {
	failed := errors.New("step failed")
	for _, c := range []struct {
		name string
		err  error
		log  string
		want Verdict
	}{
		{"good", nil, "", Verdict{State: Good}},
		{"build", failed, "#=== ERROR while compiling foo.1.0 ===#\n" + markerPrefix + "build foo.1.0 (exit 31)", Verdict{Bad, KindBuild, "foo.1.0 failed to build"}},
		{"tests", failed, "#=== ERROR while compiling foo.1.0 ===#\n" + markerPrefix + "tests foo.1.0 (exit 31)", Verdict{Bad, KindTest, "the tests of foo.1.0 failed"}},
		{"lower bounds", failed, markerPrefix + "lower-bounds foo.1.0 (exit 31)", Verdict{Bad, KindLowerBound, "foo.1.0 fails with its lowest dependencies"}},
		{"dependency step", failed, "#=== ERROR while compiling bar.2 ===#\n" + markerPrefix + "dependency bar.2 (exit 31)", Verdict{Partial, KindDependency, "dependency bar.2 failed"}},
		{"dependency in the package's step", failed, "#=== ERROR while installing bar.2 ===#\n" + markerPrefix + "build foo.1.0 (exit 31)", Verdict{Partial, KindDependency, "dependency bar.2 failed"}},
		{"no solution", failed, markerPrefix + "build foo.1.0 (exit 20)", Verdict{NotAvailable, KindSolver, "opam found no solution to install foo.1.0"}},
		{"download", failed, "[ERROR] Failed to get sources of foo.1.0: curl error\n" + markerPrefix + "build foo.1.0 (exit 40)", Verdict{InternalFailure, KindDownload, "the sources of foo.1.0 could not be downloaded"}},
		{"disk full in a step", failed, "cp: write error: No space left on device\n" + markerPrefix + "build foo.1.0 (exit 31)", Verdict{InternalFailure, KindDiskFull, "no space left on device"}},
		{"setup", failed, "opam init failed", Verdict{InternalFailure, KindInternal, "the switch could not be set up: step failed"}},
		{"other exit", failed, markerPrefix + "build foo.1.0 (exit 5)", Verdict{InternalFailure, KindInternal, "opam exited with 5 in the build step"}},
		{"timeout", current.Infra(current.FailWorkerLost, errors.New("timed out after 1h0m0s")), "", Verdict{InternalFailure, KindTimeout, "timed out after 1h0m0s"}},
		{"worker lost", current.Infra(current.FailWorkerLost, errors.New("lease lost")), "", Verdict{InternalFailure, KindWorkerLost, "lease lost"}},
		{"fleet unreachable", current.Infra(current.FailNetwork, errors.New("upload source: nats: timeout")), "", Verdict{InternalFailure, KindDownload, "upload source: nats: timeout"}},
		{"disk full on the worker", current.Infra(current.FailDiskFull, errors.New("write snapshot: no space left on device")), "", Verdict{InternalFailure, KindDiskFull, "write snapshot: no space left on device"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Classify("foo.1.0", c.err, scanOf(c.log))
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
			if got.Retry() != got.Kind.Infrastructure() {
				t.Errorf("%+v: retried %v but infrastructure %v", got, got.Retry(), got.Kind.Infrastructure())
			}
		})
	}
}

func FuzzScanLine(f *testing.F) {
	f.Add([]byte(markerPrefix + "build foo.1.0 (exit 31)"))
	f.Add([]byte("#=== ERROR while installing x.1 ===#"))
	f.Fuzz(func(t *testing.T, line []byte) {
		var s Scan
		s.Line(line)
		if s.Step != "" && !strings.HasPrefix(string(line), markerPrefix) {
			t.Errorf("a step from %q", line)
		}
		Classify("foo.1", errors.New("x"), s)
	})
}
