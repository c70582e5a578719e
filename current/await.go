package current

import (
	"context"
	"fmt"
)

// AwaitError is returned by Await; see there.
type AwaitError struct {
	// Reason says what the job waits for, shown as its wait reason.
	Reason string
	// Arm arranges for resume to be called when the wait is over; see Await.
	Arm func(ctx context.Context, resume func())
}

func (e *AwaitError) Error() string { return "waiting: " + e.Reason }

// Await is what an operation's Run returns to give back its goroutine and its pool slot
// while it waits on something outside the engine (a fleet job queued behind others):
// the job stays active, shown as waiting for reason, and costs only its record. Once
// the job is put aside, the engine calls arm with the job's context and a function
// that resumes it; arm arranges for resume to be called when the wait is over (it may
// call it at once). The engine also resumes the job when its context ends, cancelled
// or because the engine stops. A resumed job calls Run again from the start, within
// the same attempt and log (Job.Awoken tells), so Run must be able to find the work it
// left waiting (a fleet ticket derived from the job's id, say).
func Await(reason string, arm func(ctx context.Context, resume func())) error {
	return &AwaitError{Reason: reason, Arm: arm}
}

// park puts the job aside until resume is called: it holds no goroutine and no pool
// slot meanwhile, but keeps its place in the engine's count of jobs, so the engine
// does not stop before the job has finished.
func (j *runningJob) park(aw *AwaitError) {
	e := j.e
	fmt.Fprintf(j.log, "--- kiln: %s ---\n", aw.Reason)
	j.log.suspend()
	resume := func() {
		e.jmu.Lock()
		if !j.parked {
			e.jmu.Unlock()
			return
		}
		j.parked, j.parkReason = false, ""
		e.parked--
		if j.unpark != nil {
			j.unpark()
			j.unpark = nil
		}
		e.jmu.Unlock()
		j.awoken = true
		go e.runJob(j)
	}
	e.jmu.Lock()
	j.parked, j.parkReason = true, aw.Reason
	e.parked++
	j.state = ActiveReady
	j.unpark = context.AfterFunc(j.ctx, resume)
	e.jmu.Unlock()
	ent := j.ent
	e.post(func() { ent.touch() })
	if aw.Arm != nil {
		aw.Arm(j.ctx, resume)
	}
}
