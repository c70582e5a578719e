package detect

import (
	"crypto/sha256"
	"os/exec"
	"runtime"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// countChild counts ev for sh -c script, started from a locked thread.
func countChild(t *testing.T, ev Event, script string) uint64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c, err := Open(ev, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -c %q: %v: %s", script, err, out)
	}
	n, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCounters checks the counting with the software task-clock (CPU time, which
// every kernel counts): it grows with the thread's own work, and with inherit it
// takes in the CPU time of a child process. Under load CPU time, unlike wall time,
// does not grow, so the comparisons hold on a busy machine.
func TestCounters(t *testing.T) {
	testenv.RequireCommand(t, "sh")
	t.Run("the thread's own work", func(t *testing.T) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c, err := Open(TaskClock, false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for range 20 {
			sha256.Sum256(buf)
		}
		after, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if after <= before {
			t.Errorf("task-clock %d before hashing 20 MiB, %d after", before, after)
		}
	})
	t.Run("a child process's work, inherited", func(t *testing.T) {
		idle := countChild(t, TaskClock, "true")
		busy := countChild(t, TaskClock, "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done")
		t.Logf("task-clock: %d ns for true, %d ns for a loop of 30,000", idle, busy)
		if busy <= 2*idle {
			t.Errorf("task-clock of a busy child %d ns, of an idle one %d ns: the child's CPU time is not counted", busy, idle)
		}
	})
	t.Run("instructions where the CPU exposes them", func(t *testing.T) {
		if ok, why := CountersAvailable(); !ok {
			t.Skipf("needs a CPU performance monitoring unit: %s", why)
		}
		if n := countChild(t, Instructions, "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); done"); n == 0 {
			t.Error("no instructions counted for a loop of 1000")
		}
	})
	t.Run("events by name", func(t *testing.T) {
		for _, name := range []string{"instructions", "task-clock"} {
			if ev, ok := EventNamed(name); !ok || ev.Name != name {
				t.Errorf("EventNamed(%q) = %+v, %v", name, ev, ok)
			}
		}
		if _, ok := EventNamed("cycles"); ok {
			t.Error("EventNamed(cycles) found an event not offered")
		}
	})
}
