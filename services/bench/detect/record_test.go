package detect

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"testing"
)

var record = flag.Bool("record", false, "record this machine's benchmark noise again into testdata/noise.json (about 3 minutes)")

const noisePath = "testdata/noise.json"

// TestRecordNoise refreshes the recorded noise with -record; otherwise it checks that
// a short recording has the shape the simulation needs.
func TestRecordNoise(t *testing.T) {
	o := RecordOptions{Bursts: 3, BurstSize: 4, Gap: 1, Work: 1}
	if *record {
		o = RecordOptions{}
	}
	rec, err := Record(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Bursts) != max(o.Bursts, 3) && !*record {
		t.Fatalf("%d bursts, want %d", len(rec.Bursts), o.Bursts)
	}
	for i, b := range rec.Bursts {
		for j, x := range b {
			if x <= 0 {
				t.Fatalf("burst %d timing %d is %v ns", i, j, x)
			}
		}
	}
	if *record {
		if err := rec.Save(noisePath); err != nil {
			t.Fatal(err)
		}
		t.Logf("recorded %d bursts of %d on %s (%s); counters: %q", len(rec.Bursts), len(rec.Bursts[0]), rec.CPU, rec.Kernel, rec.Counters)
		return
	}
	path := filepath.Join(t.TempDir(), "noise.json")
	if err := rec.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil || len(back.Bursts) != len(rec.Bursts) {
		t.Fatalf("load after save: %v", err)
	}
}

func TestParseLoadAvg(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     float64
		err      bool
	}{
		{"quiet", "0.71 0.39 0.64 1/107 28583\n", 0.71, false},
		{"busy", "25.03 20.88 15.39 20/277 23059\n", 25.03, false},
		{"empty", "", 0, true},
		{"not a number", "x 1 2 3/4 5", 0, true},
		{"negative", "-1 0 0 1/1 1", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseLoadAvg(c.in)
			if (err != nil) != c.err || got != c.want {
				t.Errorf("parseLoadAvg(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
			}
		})
	}
}

// TestRecordLoad: a recording keeps the range of load averages it saw, and one asked
// on a machine busier than MaxLoad is refused.
func TestRecordLoad(t *testing.T) {
	load, err := LoadAverage()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("load range recorded", func(t *testing.T) {
		rec, err := Record(context.Background(), RecordOptions{Bursts: 2, BurstSize: 2, Gap: 1, Work: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Load) != 2 || rec.Load[0] > rec.Load[1] || rec.Load[0] < 0 {
			t.Errorf("load range %v", rec.Load)
		}
	})
	t.Run("busier than MaxLoad: refused", func(t *testing.T) {
		if load == 0 {
			t.Skip("the load average is 0: no MaxLoad is below it")
		}
		_, err := Record(context.Background(), RecordOptions{Bursts: 2, BurstSize: 2, Gap: 1, Work: 1, MaxLoad: load / 1e6})
		if !errors.Is(err, ErrBusy) {
			t.Errorf("recording with MaxLoad %g at load %g: %v, want ErrBusy", load/1e6, load, err)
		}
	})
}
