package deployer

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkCommitToLive measures a commit on the deployed branch to its version served
// in production: fetch, build, push, staging, health check, promotion, health check;
// each step an engine job (engine-jobs), or run in place (in-place).
func BenchmarkCommitToLive(b *testing.B) {
	w := newWorld(b)
	w.d.Poll(b.Context()) // the first deploy starts both stages' instances
	w.serves(b, w.production, "v1")
	n := 0
	for _, jobs := range []bool{true, false} {
		name := "in-place"
		if jobs {
			name = "engine-jobs"
		}
		b.Run(name, func(b *testing.B) {
			w.d.steps.mu.Lock()
			w.d.steps.on = jobs
			w.d.steps.mu.Unlock()
			for b.Loop() {
				n++
				v := fmt.Sprintf("bench-%d", n)
				w.repo.commit(b, v)
				w.d.Poll(b.Context())
				w.serves(b, w.production, v)
			}
		})
	}
}

// BenchmarkRollback measures a commit whose health check fails, without staging, to
// its deploy recorded as rolled back (the previous version serving all along), with a
// health-check deadline of 3 s; s-deploy-to-rolled-back/op is the deploy's own part.
func BenchmarkRollback(b *testing.B) {
	w := newWorld(b)
	w.cfg.Services[0].Health.Deadline = Duration(3 * time.Second)
	w.cfg.Services[0].Staging = nil
	w.writeConfig(b)
	if _, err := w.d.Reload(); err != nil {
		b.Fatal(err)
	}
	w.d.Poll(b.Context())
	w.serves(b, w.production, "v1")
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		w.repo.commit(b, fmt.Sprintf("broken-%d", i))
		w.d.Poll(b.Context())
		r := lastRecords(w.d, 1)[0]
		if r.Outcome != OutcomeRolledBack {
			b.Fatalf("record %+v", r)
		}
		took += r.Finished.Sub(r.Started)
		w.serves(b, w.production, "v1")
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "s-deploy-to-rolled-back/op")
}
