package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder/sandbox"
)

func TestBenchCheck(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, output string
		errSub       string
	}{
		{"valid v3 among log lines", "build\n" + `{"results": [{"name": "t", "metrics": [{"name": "time", "value": [1.5, 1.6], "units": "s"}]}]}` + "\nok\n", ""},
		{"an error names its line", "build\n" + `{"results": [{"name": "t", "metrics": [` + "\n" + `{"name": "time", "value": [1, {"avg": 2}]}]}]}` + "\n", "1 errors"},
		{"no results", "only logs\n", "no benchmark results in 1 lines"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.Repeat("x", i+1))
			if err := os.WriteFile(path, []byte(c.output), 0o644); err != nil {
				t.Fatal(err)
			}
			rootCmd.SetArgs([]string{"bench", "check", path})
			err := rootCmd.Execute()
			switch {
			case c.errSub == "" && err != nil:
				t.Fatalf("check: %v", err)
			case c.errSub != "" && (err == nil || !strings.Contains(err.Error(), c.errSub)):
				t.Fatalf("check: %v, want an error containing %q", err, c.errSub)
			}
		})
	}
}

func TestBenchSlotLimits(t *testing.T) {
	cases := []struct {
		cpus string
		ok   bool
	}{
		{"1", true}, {"2,3", true}, {"0-3", true}, {"0-1,4", true},
		{"", false}, {"a", false}, {"1,", false}, {"1 2", false},
	}
	for _, c := range cases {
		t.Run(c.cpus, func(t *testing.T) {
			lim, err := benchSlotLimits(c.cpus, sandbox.Limits{CPUs: 2, Memory: 1 << 30})
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok %v", err, c.ok)
			}
			if c.ok && (lim.CPUSet != c.cpus || lim.CPUs != 0 || lim.Memory != 1<<30) {
				t.Errorf("limits %+v: want pinned to %s, no quota, memory kept", lim, c.cpus)
			}
		})
	}
}
