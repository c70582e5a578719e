package bench

import (
	"context"
	"log/slog"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
)

// scheduled is a branch head benchmarked again on its repository's schedule.
type scheduled struct {
	ref   forge.Ref
	sched Schedule
	next  time.Time
}

// noteSchedule keeps (or drops) the schedule of branch head r, as its commit's bench
// section cfg says, counted from now when the head or the schedule is new.
func (p *Pipeline) noteSchedule(r forge.Ref, cfg Config, now time.Time) {
	p.schedMu.Lock()
	defer p.schedMu.Unlock()
	if cfg.Schedule.Spec == "" {
		delete(p.schedules, r.Key())
		return
	}
	if s, ok := p.schedules[r.Key()]; ok && s.ref.Commit == r.Commit && s.sched.Spec == cfg.Schedule.Spec {
		return
	}
	if p.schedules == nil {
		p.schedules = map[string]*scheduled{}
	}
	p.schedules[r.Key()] = &scheduled{ref: r, sched: cfg.Schedule, next: cfg.Schedule.Next(now)}
}

// due returns the branch heads whose schedule is due at now, moving each to its next
// time.
func (p *Pipeline) due(now time.Time) []forge.Ref {
	p.schedMu.Lock()
	defer p.schedMu.Unlock()
	var out []forge.Ref
	for _, s := range p.schedules {
		if !s.next.After(now) {
			out = append(out, s.ref)
			s.next = s.sched.Next(now)
		}
	}
	return out
}

// runDue runs again, in e, the branch heads whose schedule is due at now.
func (p *Pipeline) runDue(e *current.Engine, now time.Time, logger *slog.Logger) {
	if p.op == nil {
		p.makeOp()
	}
	for _, r := range p.due(now) {
		n, err := p.op.Rebuild(e, func(t Task) bool { return t.Ref.PR == 0 && t.Ref.Key() == r.Key() && t.Ref.Commit == r.Commit })
		if err != nil || n == 0 {
			logger.Warn("bench: scheduled run not started", "repo", r.Repo.String(), "ref", r.Name, "commit", r.Commit, "started", n, "err", err)
			continue
		}
		logger.Info("bench: scheduled run", "repo", r.Repo.String(), "ref", r.Name, "commit", r.Commit)
	}
}

// Schedule runs the branch heads again on their repositories' schedules, looking
// every tick, until ctx ends.
func (p *Pipeline) Schedule(ctx context.Context, e *current.Engine, tick time.Duration, logger *slog.Logger) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.runDue(e, now, logger)
		}
	}
}
