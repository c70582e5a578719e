package detect

import (
	"context"
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
