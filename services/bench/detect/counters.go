package detect

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Event is what a Counter counts.
type Event struct {
	// Name is the metric's name ("instructions", "task-clock"); Units its units.
	Name, Units string
	typ         uint32
	config      uint64
}

// The events counted: instructions retired (a hardware counter of the CPU's
// performance monitoring unit), and the CPU time of the tasks (a software counter
// every Linux kernel has, in nanoseconds).
var (
	Instructions = Event{Name: "instructions", Units: "instructions", typ: unix.PERF_TYPE_HARDWARE, config: unix.PERF_COUNT_HW_INSTRUCTIONS}
	TaskClock    = Event{Name: "task-clock", Units: "ns", typ: unix.PERF_TYPE_SOFTWARE, config: unix.PERF_COUNT_SW_TASK_CLOCK}
)

// EventNamed is the event of that name.
func EventNamed(name string) (Event, bool) {
	for _, ev := range []Event{Instructions, TaskClock} {
		if ev.Name == name {
			return ev, true
		}
	}
	return Event{}, false
}

// Counter counts an event of the thread that opened it (and, with inherit, of the
// processes it starts afterwards). Instructions vary far less than time from run to
// run, so they are recorded beside time where the CPU exposes them.
type Counter struct {
	fd int
}

// CountersAvailable says whether this machine exposes hardware counters to perf, and
// why not when it does not (a virtual machine often exposes none).
func CountersAvailable() (bool, string) {
	if _, err := os.Stat("/sys/bus/event_source/devices/cpu"); err != nil {
		if m, _ := filepath.Glob("/sys/bus/event_source/devices/cpu_*"); len(m) == 0 {
			return false, "no CPU performance monitoring unit in /sys/bus/event_source/devices (the hypervisor exposes none)"
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c, err := Open(Instructions, false)
	if err != nil {
		return false, err.Error()
	}
	c.Close()
	return true, ""
}

// OpenInstructions starts counting the user-space instructions retired by the calling
// thread, as Open(Instructions, inherit).
func OpenInstructions(inherit bool) (*Counter, error) { return Open(Instructions, inherit) }

// Open starts counting ev in user space for the calling thread, which should be locked
// to its goroutine (runtime.LockOSThread). With inherit, processes and threads started
// afterwards from it are counted too, once they have exited.
func Open(ev Event, inherit bool) (*Counter, error) {
	attr := unix.PerfEventAttr{
		Type:   ev.typ,
		Config: ev.config,
		Size:   uint32(binary.Size(unix.PerfEventAttr{})),
		Bits:   unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
	}
	if inherit {
		attr.Bits |= unix.PerfBitInherit
	}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("count %s: perf_event_open: %w", ev.Name, err)
	}
	return &Counter{fd: fd}, nil
}

// Read returns the count so far.
func (c *Counter) Read() (uint64, error) {
	var b [8]byte
	if _, err := unix.Read(c.fd, b[:]); err != nil {
		return 0, fmt.Errorf("read a performance counter: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Close stops counting.
func (c *Counter) Close() error { return unix.Close(c.fd) }
