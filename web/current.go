package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-ci/kiln/current"
)

// CurrentEngine serves the console from a current.Engine.
type CurrentEngine struct{ E *current.Engine }

var _ Engine = CurrentEngine{}

func nodeState(n current.Node) State {
	switch n.State {
	case current.StateOk:
		return StateOk
	case current.StateFailed:
		return StateFailed
	case current.StateBlocked:
		return StateBlocked
	}
	switch n.Active {
	case current.ActiveRunning:
		return StateRunning
	case current.ActiveWaitingForConfirmation:
		return StateWaiting
	}
	return StateReady
}

// Graph converts the engine's graph snapshot.
func (c CurrentEngine) Graph(ctx context.Context) (Graph, error) {
	g := c.E.Graph()
	parent := make(map[int64]int64, len(g.Groups))
	out := Graph{Nodes: make([]Node, 0, len(g.Nodes)), Groups: make([]GroupInfo, 0, len(g.Groups))}
	for _, gr := range g.Groups {
		parent[gr.ID] = gr.Parent
		label := gr.Label
		if gr.Item != "" {
			label = gr.Item
		}
		out.Groups = append(out.Groups, GroupInfo{ID: "g" + strconv.FormatInt(gr.ID, 10), Label: label, Kind: gr.Kind, Collapse: gr.Kind == "collapse"})
	}
	paths := map[int64][]string{}
	var path func(id int64) []string
	path = func(id int64) []string {
		if id == 0 {
			return nil
		}
		if p, ok := paths[id]; ok {
			return p
		}
		paths[id] = nil // a cycle, which the engine never makes, ends here
		p := append(slices.Clone(path(parent[id])), "g"+strconv.FormatInt(id, 10))
		paths[id] = p
		return p
	}
	for _, n := range g.Nodes {
		nd := Node{
			ID: strconv.FormatInt(n.ID, 10), Label: n.Label, State: nodeState(n), Message: n.Message,
			JobID: n.JobID, Latched: n.Latched, Groups: path(n.Group),
		}
		if nd.Label == "" {
			nd.Label = n.Kind
		}
		for _, in := range n.Inputs {
			nd.Inputs = append(nd.Inputs, strconv.FormatInt(in, 10))
		}
		out.Nodes = append(out.Nodes, nd)
	}
	return out, nil
}

// Subscribe passes on the engine's change notifications.
func (c CurrentEngine) Subscribe() (<-chan struct{}, func()) { return c.E.Subscribe() }

func job(ji current.JobInfo) Job {
	return Job{
		ID: ji.ID, Op: ji.Op, Key: ji.Key, Label: ji.Label, Build: ji.Build, State: State(ji.State),
		Why: ji.WaitReason, Lane: string(ji.Lane), Level: ji.Level.String(), Attempts: ji.Attempts,
		Message: ji.Message, FailureKind: string(ji.FailureKind), Live: ji.Live,
		Ready: ji.Ready, Running: ji.Running, Finished: ji.Finished,
	}
}

// ActiveJobs lists the engine's ready, waiting and running jobs.
func (c CurrentEngine) ActiveJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	for _, ji := range c.E.Jobs() {
		out = append(out, job(ji))
	}
	return out, nil
}

// Job returns a job with the history of its key.
func (c CurrentEngine) Job(ctx context.Context, id string) (Job, []Job, error) {
	d, err := c.E.Job(id)
	if err != nil {
		return Job{}, nil, err
	}
	var hist []Job
	for _, h := range d.History {
		hist = append(hist, job(h))
	}
	return job(d.JobInfo), hist, nil
}

// logErr marks the engine's complaints about a bad offset as bad input.
func logErr(err error) error {
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "beyond its end") || strings.Contains(err.Error(), "negative offset"):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	case strings.Contains(err.Error(), "deleted by log retention"):
		return &statusError{code: http.StatusGone, msg: err.Error()}
	}
	return err
}

// ReadLog reads part of a job's log.
func (c CurrentEngine) ReadLog(ctx context.Context, id string, offset int64, max int) (LogChunk, error) {
	ch, err := c.E.ReadLog(id, offset, max)
	if err != nil {
		return LogChunk{}, logErr(err)
	}
	return LogChunk{Data: ch.Data, Next: ch.Next, Done: ch.Done}, nil
}

// FollowLog follows a job's log.
func (c CurrentEngine) FollowLog(ctx context.Context, id string, offset int64) (io.ReadCloser, error) {
	r, err := c.E.FollowLog(ctx, id, offset)
	return r, logErr(err)
}

func actionErr(err error) error {
	if errors.Is(err, current.ErrNotActive) {
		return &statusError{code: http.StatusConflict, msg: err.Error()}
	}
	return err
}

// Cancel cancels an active job.
func (c CurrentEngine) Cancel(ctx context.Context, id string) error { return actionErr(c.E.Cancel(id)) }

// StartNow starts an active job at once.
func (c CurrentEngine) StartNow(ctx context.Context, id string) error {
	return actionErr(c.E.StartNow(id))
}

// Rebuild builds a job's key again.
func (c CurrentEngine) Rebuild(ctx context.Context, id string) (RebuildResult, error) {
	r, err := c.E.Rebuild(id)
	return RebuildResult{JobID: r.JobID, Deferred: r.Deferred}, err
}

// Query searches the stored results.
func (c CurrentEngine) Query(ctx context.Context, f Filter) ([]Job, error) {
	q := current.Query{Op: f.Op, KeyContains: f.Key, Since: f.Since, Until: f.Before, LatestOnly: f.Latest, Limit: f.Limit, Offset: f.Offset}
	if f.State != "" {
		q.States = []current.JobState{current.JobState(f.State)}
	}
	if f.Kind != "" {
		q.Kinds = []current.FailureKind{current.FailureKind(f.Kind)}
	}
	res, err := c.E.Query(q)
	if err != nil {
		return nil, err
	}
	out := make([]Job, 0, len(res))
	for _, ji := range res {
		out = append(out, job(ji))
	}
	return out, nil
}

func rule(r current.LogRule) LogRule {
	return LogRule{ID: strconv.FormatInt(r.ID, 10), Pattern: r.Pattern, Explanation: r.Explanation, Created: r.Created}
}

// LogRules lists the log rules.
func (c CurrentEngine) LogRules(ctx context.Context) ([]LogRule, error) {
	rs, err := c.E.LogRules()
	if err != nil {
		return nil, err
	}
	out := make([]LogRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, rule(r))
	}
	return out, nil
}

// AddLogRule adds a log rule; a bad pattern is bad input.
func (c CurrentEngine) AddLogRule(ctx context.Context, pattern, explanation string) (LogRule, error) {
	r, err := c.E.AddLogRule(pattern, explanation)
	if err != nil {
		if strings.HasPrefix(err.Error(), "log rule:") {
			return LogRule{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return LogRule{}, err
	}
	return rule(r), nil
}

// DeleteLogRule removes a log rule.
func (c CurrentEngine) DeleteLogRule(ctx context.Context, id string) error {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return fmt.Errorf("log rule %q: %w", id, ErrNotFound)
	}
	return c.E.DeleteLogRule(n)
}

// TestLogRule tries a pattern on recent failed logs.
func (c CurrentEngine) TestLogRule(ctx context.Context, pattern string) ([]RuleMatch, error) {
	ms, err := c.E.TestLogRule(pattern, 50)
	if err != nil {
		if strings.HasPrefix(err.Error(), "log rule:") {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil, err
	}
	out := make([]RuleMatch, 0, len(ms))
	for _, m := range ms {
		out = append(out, RuleMatch{JobID: m.JobID, Label: m.Label, Matched: m.Matched, Line: m.Line, Text: m.Text, Error: m.Error})
	}
	return out, nil
}

var levels = []string{"harmless", "mostly-harmless", "average", "above-average", "dangerous"}

// Confirm returns the confirmation level and auto-release.
func (c CurrentEngine) Confirm(ctx context.Context) (ConfirmState, error) {
	st := c.E.Status()
	return ConfirmState{Level: st.ConfirmLevel.String(), Levels: levels, AutoRelease: st.AutoReleaseAt, Released: st.AutoReleased}, nil
}

// SetConfirm sets the confirmation level.
func (c CurrentEngine) SetConfirm(ctx context.Context, level string) error {
	l, err := current.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return c.E.SetConfirmLevel(l)
}

// Pools lists the engine's pools.
func (c CurrentEngine) Pools(ctx context.Context) ([]Pool, error) {
	var out []Pool
	for _, p := range c.E.Status().Pools {
		out = append(out, Pool{Name: p.Name, Slots: p.Slots, InUse: p.InUse, Urgent: p.Urgent, Background: p.Background})
	}
	return out, nil
}
