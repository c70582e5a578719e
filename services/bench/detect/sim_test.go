package detect

import (
	"math"
	"testing"
)

// TestSimulationRecorded prints the detectors' figures on the noise recorded on this
// machine (go test -run TestSimulationRecorded -v; refresh the recording with -record).
func TestSimulationRecorded(t *testing.T) {
	rec, err := Load(noisePath)
	if err != nil {
		t.Fatal(err)
	}
	o := SimOptions{Seed: 1}
	rows, err := Simulate(rec, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, %d bursts of %d recorded %s on %s (%d CPUs, kernel %s)\n%s",
		rec.Benchmark, len(rec.Bursts), len(rec.Bursts[0]), rec.Recorded.Format("2006-01-02"), rec.CPU, rec.CPUs, rec.Kernel, Table(rows))
	if rec.Counters != "" {
		t.Logf("instructions retired not recorded: %s", rec.Counters)
	}
	cases := []struct {
		name string
		ok   func(SimRow) bool
	}{
		{"false alarms are a rate", func(r SimRow) bool { return r.FalseAlarms >= 0 && r.FalseAlarms <= 100 }},
		{"smallest regression is one tried", func(r SimRow) bool {
			if math.IsNaN(r.Smallest) {
				return true
			}
			for _, d := range o.withDefaults().Deltas {
				if d == r.Smallest {
					return true
				}
			}
			return false
		}},
		{"every trial ran", func(r SimRow) bool { return r.Trials == o.withDefaults().Trials }},
	}
	if len(rows) != 9 {
		t.Fatalf("%d rows, want 3 methods by 3 repeat counts", len(rows))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, r := range rows {
				if !c.ok(r) {
					t.Errorf("%s, %d repeats: %+v", r.Method, r.Repeats, r)
				}
			}
		})
	}
}
