package detect

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Counter counts the instructions retired by the thread that opened it (and, with
// inherit, the processes it starts afterwards). Instructions vary far less than time
// from run to run, so they are recorded beside time where the CPU exposes them.
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
	c, err := OpenInstructions(false)
	if err != nil {
		return false, err.Error()
	}
	c.Close()
	return true, ""
}

// OpenInstructions starts counting the user-space instructions retired by the calling
// thread, which should be locked to its goroutine (runtime.LockOSThread). With inherit,
// processes and threads started afterwards from it are counted too.
func OpenInstructions(inherit bool) (*Counter, error) {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_HARDWARE,
		Config: unix.PERF_COUNT_HW_INSTRUCTIONS,
		Size:   uint32(binary.Size(unix.PerfEventAttr{})),
		Bits:   unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
	}
	if inherit {
		attr.Bits |= unix.PerfBitInherit
	}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("count instructions retired: perf_event_open: %w", err)
	}
	return &Counter{fd: fd}, nil
}

// Read returns the instructions counted so far.
func (c *Counter) Read() (uint64, error) {
	var b [8]byte
	if _, err := unix.Read(c.fd, b[:]); err != nil {
		return 0, fmt.Errorf("read instructions retired: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Close stops counting.
func (c *Counter) Close() error { return unix.Close(c.fd) }
