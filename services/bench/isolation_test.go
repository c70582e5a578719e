package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// spread sums up timings: the median in ms, the coefficient of variation and the
// 10–90 % range relative to the median.
func spread(xs []float64) (median, cv, p1090 float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	median = s[len(s)/2]
	var mean, sq float64
	for _, x := range s {
		mean += x
	}
	mean /= float64(len(s))
	for _, x := range s {
		sq += (x - mean) * (x - mean)
	}
	cv = math.Sqrt(sq/float64(len(s)-1)) / mean
	p1090 = (s[len(s)*9/10] - s[len(s)/10]) / median
	return median / 1e6, cv, p1090
}

func cpusAllowed(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestIsolation measures a CPU-bound benchmark's spread alone, with a build (every CPU
// busy) beside it on the same machine, and with the two in separate cpuset slots (the
// benchmark on the last CPU, the build on the others), and checks that the slots hold
// the processes where they were put.
func TestIsolation(t *testing.T) {
	testenv.Short(t, "keeps the CPUs busy for a few seconds")
	testenv.RequireRoot(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs: one for the benchmark slot, one for the build")
	}
	last := fmt.Sprint(runtime.NumCPU() - 1)
	others := "0"
	if runtime.NumCPU() > 2 {
		others = fmt.Sprintf("0-%d", runtime.NumCPU()-2)
	}
	benchSlot, err := NewSlot(fmt.Sprintf("test-%d-bench", os.Getpid()), last)
	if err != nil {
		t.Fatal(err)
	}
	buildSlot, err := NewSlot(fmt.Sprintf("test-%d-build", os.Getpid()), others)
	if err != nil {
		t.Fatal(err)
	}
	defer buildSlot.Remove()
	defer benchSlot.Remove()
	const samples = 60
	cases := []struct {
		name  string
		build bool
		slots bool
	}{
		{"alone", false, false},
		{"a build beside, no slots", true, false},
		{"a build beside, cpuset slots", true, true},
	}
	var table strings.Builder
	table.WriteString("| benchmark | median ms | CV | (p90-p10)/median |\n|---|---|---|---|\n")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.build {
				spin := exec.Command(os.Args[0])
				spin.Env = append(os.Environ(), "KILN_BENCH_HELPER=spin")
				if err := spin.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { spin.Process.Kill(); spin.Wait() }()
				if c.slots {
					if err := buildSlot.Add(spin.Process.Pid); err != nil {
						t.Fatal(err)
					}
					if got := cpusAllowed(t, spin.Process.Pid); got != others {
						t.Errorf("the build runs on CPUs %s, want %s", got, others)
					}
				}
			}
			b := exec.Command(os.Args[0])
			b.Env = append(os.Environ(), fmt.Sprintf("KILN_BENCH_HELPER=bench:%d", samples))
			in, _ := b.StdinPipe()
			out, _ := b.StdoutPipe()
			b.Stderr = os.Stderr
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			if c.slots {
				if err := benchSlot.Add(b.Process.Pid); err != nil {
					t.Fatal(err)
				}
				if got := cpusAllowed(t, b.Process.Pid); got != last {
					t.Errorf("the benchmark runs on CPUs %s, want %s", got, last)
				}
			}
			io.WriteString(in, "go\n")
			var times []float64
			if err := json.NewDecoder(out).Decode(&times); err != nil {
				t.Fatal(err)
			}
			if err := b.Wait(); err != nil {
				t.Fatal(err)
			}
			if len(times) != samples {
				t.Fatalf("%d timings, want %d", len(times), samples)
			}
			med, cv, r := spread(times)
			fmt.Fprintf(&table, "| %s | %.1f | %.2f | %.2f |\n", c.name, med, cv, r)
		})
	}
	t.Logf("%d timings of SHA-256 of 8 MiB each, %d CPUs (benchmark slot CPU %s, build slot CPUs %s):\n%s",
		samples, runtime.NumCPU(), last, others, table.String())
}
