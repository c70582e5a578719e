package host

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
)

// DefaultMemoryIdle is how long the engine is idle before the host returns memory.
const DefaultMemoryIdle = time.Minute

// minSpare is the memory held beyond the live heap below which returning memory is not
// worth a collection.
const minSpare = 32 << 20

// MemoryReturner gives back to the system the memory the Go runtime keeps beyond the
// live heap, once the engine has been idle (made no evaluation pass) for Idle. After a
// burst of work (a restart reading every ref again, a push to a thousand repositories)
// the runtime would otherwise keep its peak: it returns free memory only down to about
// twice the live heap, and a server at rest allocates too little to get there.
type MemoryReturner struct {
	Engine *current.Engine
	// Idle is how long without a pass counts as idle (default DefaultMemoryIdle).
	Idle   time.Duration
	Logger *slog.Logger
	// Register, when set, receives kiln_host_memory_returned_bytes_total.
	Register prometheus.Registerer
}

// Run watches the engine until ctx ends, returning memory once per idle spell.
func (m *MemoryReturner) Run(ctx context.Context) {
	idle := m.Idle
	if idle <= 0 {
		idle = DefaultMemoryIdle
	}
	log := m.Logger
	if log == nil {
		log = slog.Default()
	}
	returned := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_host_memory_returned_bytes_total",
		Help: "Memory held beyond the live heap returned to the system once the engine was idle.",
	})
	if m.Register != nil {
		m.Register.MustRegister(returned)
	}
	t := time.NewTicker(max(idle/8, 10*time.Millisecond))
	defer t.Stop()
	lastPass, done := uint64(0), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := m.Engine.Status()
		if st.Pass != lastPass {
			lastPass, done = st.Pass, false
		}
		since := st.LastPass
		if done || time.Since(since) < idle {
			continue
		}
		done = true
		before := spare()
		if before < minSpare {
			continue
		}
		debug.FreeOSMemory()
		n := before - min(before, spare())
		returned.Add(float64(n))
		log.Debug("returned free memory to the system", "bytes", n, "idle", time.Since(since).Round(time.Second))
	}
}

// spare is the memory the runtime holds from the system beyond the live heap (as of the
// last collection).
func spare() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	held := s[0].Value.Uint64() - s[1].Value.Uint64()
	return held - min(held, s[2].Value.Uint64())
}
