package current

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Graph is a snapshot of the live pipeline graph.
type Graph struct {
	Pass   uint64  `json:"pass"`   // number of evaluation passes so far
	Root   int64   `json:"root"`   // id of the pipeline's result node (0: not running)
	Nodes  []Node  `json:"nodes"`  // sorted by id
	Groups []Group `json:"groups"` // sorted by id
}

// Node is one node of a Graph.
type Node struct {
	ID    int64  `json:"id"`
	Label string `json:"label"`
	// Kind: return, fail, map, pair, all, list, gate, catch, collapse, bind, listmap,
	// collect, item, op, monitor, var.
	Kind    string      `json:"kind"`
	State   State       `json:"state"`
	Active  ActiveState `json:"active"` // meaningful when State is StateActive
	Message string      `json:"message,omitempty"`
	JobID   string      `json:"job_id,omitempty"`
	Key     string      `json:"key,omitempty"`     // for an operation: the label of its input
	Latched bool        `json:"latched,omitempty"` // a publish showing its previous outcome
	Inputs  []int64     `json:"inputs"`
	Group   int64       `json:"group,omitempty"` // innermost group (0: none)
}

// Group is a set of nodes a console may collapse into one box: a ListMap ("listmap"),
// one of its items ("item", Item is the key) or a Collapse ("collapse").
type Group struct {
	ID     int64  `json:"id"`
	Kind   string `json:"kind"`
	Label  string `json:"label"`
	Item   string `json:"item,omitempty"`
	Parent int64  `json:"parent,omitempty"`
}

// Graph returns a snapshot of the live graph.
func (e *Engine) Graph() Graph {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := Graph{Pass: e.pass, Nodes: make([]Node, 0, len(e.nodes))}
	if e.root != nil {
		g.Root = e.root.id
	}
	groups := map[int64]*group{}
	ids := make([]int64, 0, len(e.nodes))
	edges := 0
	for id, n := range e.nodes {
		ids = append(ids, id)
		edges += len(n.inputs)
	}
	slices.Sort(ids)
	inputs := make([]int64, edges)
	for _, id := range ids {
		n := e.nodes[id]
		nd := Node{ID: n.id, Label: n.label, Kind: n.kind, State: n.display, Message: n.dmsg, Inputs: inputs[:len(n.inputs):len(n.inputs)]}
		inputs = inputs[len(n.inputs):]
		if nd.State == StateActive {
			nd.Active = n.out.active
			if o, ok := n.impl.(*opImpl); ok {
				if a, ok := o.activeState(); ok {
					nd.Active = a
				}
			}
		}
		if o, ok := n.impl.(*opImpl); ok && o.enc {
			nd.Key = o.label
		}
		if jb, ok := n.impl.(jobber); ok {
			nd.JobID, nd.Latched = jb.jobInfo(n)
		}
		for i, in := range n.inputs {
			nd.Inputs[i] = in.id
		}
		for gr := n.group; gr != nil; gr = gr.parent {
			if _, seen := groups[gr.id]; seen {
				break
			}
			groups[gr.id] = gr
		}
		if n.group != nil {
			nd.Group = n.group.id
		}
		g.Nodes = append(g.Nodes, nd)
	}
	for _, gr := range groups {
		x := Group{ID: gr.id, Kind: gr.kind, Label: gr.label, Item: gr.item}
		if gr.parent != nil {
			x.Parent = gr.parent.id
		}
		g.Groups = append(g.Groups, x)
	}
	sort.Slice(g.Groups, func(i, j int) bool { return g.Groups[i].ID < g.Groups[j].ID })
	return g
}

// JobState is the state of a job.
type JobState string

// The job states. Ready, waiting and running jobs are active; ok and failed are final;
// an interrupted job (its process stopped) runs again when its pipeline wants it.
const (
	JobReady       JobState = "ready"
	JobWaiting     JobState = "waiting-for-confirmation"
	JobRunning     JobState = "running"
	JobOK          JobState = "ok"
	JobFailed      JobState = "failed"
	JobInterrupted JobState = "interrupted"
)

// JobInfo describes a job (one build of one key of one operation).
type JobInfo struct {
	ID          string      `json:"id"`
	Op          string      `json:"op"`
	Key         string      `json:"key"`
	KeyDigest   string      `json:"key_digest"`
	Label       string      `json:"label"`
	Build       int         `json:"build"`
	State       JobState    `json:"state"`
	Message     string      `json:"message,omitempty"`
	FailureKind FailureKind `json:"failure_kind,omitempty"`
	// FailingLines are the log lines that explain the failure, when the job said.
	FailingLines []string  `json:"failing_lines,omitempty"`
	Level        Level     `json:"level"`
	Lane         Lane      `json:"lane"`
	Attempts     int       `json:"attempts"`
	WaitReason   string    `json:"wait_reason,omitempty"` // why an active job is not running
	Ready        time.Time `json:"ready"`
	Running      time.Time `json:"running,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
	Expires      time.Time `json:"expires,omitzero"`
	Rebuild      bool      `json:"rebuild_requested,omitempty"`
	Live         bool      `json:"live"` // the live graph wants this key
	// LogPath is the log's file, empty when logs are kept in the database.
	LogPath    string `json:"log_path"`
	LogSize    int64  `json:"log_size"`
	LogDeleted bool   `json:"log_deleted,omitempty"`
}

// JobDetail is a job with the history of its key, newest first.
type JobDetail struct {
	JobInfo
	History []JobInfo `json:"history"`
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (e *Engine) info(r *jobRow) JobInfo {
	ji := JobInfo{
		ID: strconv.FormatInt(r.ID, 10), Op: r.Op, Key: r.Key, KeyDigest: r.Digest, Label: r.Label, Build: r.Build,
		State: JobState(r.State), Message: r.Message, FailureKind: r.FailureKind, FailingLines: r.FailingLines, Level: r.Level, Lane: r.Lane,
		Attempts: r.Attempts, Ready: unixTime(r.ReadyAt), Running: unixTime(r.RunningAt),
		Finished: unixTime(r.FinishedAt), Expires: unixTime(r.ExpiresAt), Rebuild: r.Rebuild,
		LogPath: e.logPath(r.ID), LogSize: r.LogSize, LogDeleted: r.LogDeleted,
	}
	e.jmu.Lock()
	j := e.jobs[ji.ID]
	e.jmu.Unlock()
	if j != nil {
		ji.Live = true
		switch j.activeState() {
		case ActiveWaitingForConfirmation:
			ji.State = JobWaiting
		case ActiveRunning:
			ji.State = JobRunning
		default:
			ji.State = JobReady
		}
		if ji.State != JobRunning {
			ji.WaitReason = j.reason()
		}
		ji.LogSize, _, _ = j.log.state()
	}
	return ji
}

func (e *Engine) markLive(infos []JobInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range infos {
		if ent := e.entries[entryKey{infos[i].Op, infos[i].KeyDigest}]; ent != nil && ent.refs > 0 {
			infos[i].Live = true
		}
	}
}

// Jobs lists the active jobs (ready, waiting for confirmation, running), oldest first,
// each with the reason it waits.
func (e *Engine) Jobs() []JobInfo {
	e.jmu.Lock()
	rows := make([]jobRow, 0, len(e.jobs))
	for _, j := range e.jobs {
		rows = append(rows, j.row)
	}
	e.jmu.Unlock()
	var ids []int64
	for i := range rows {
		if rows[i].Key == "" {
			ids = append(ids, rows[i].ID)
		}
	}
	if keys, err := e.db.keys(ids); err != nil {
		e.log.Warn("read the keys of active jobs", "err", err)
	} else {
		for i := range rows {
			if k, ok := keys[rows[i].ID]; ok {
				rows[i].Key = k
			}
		}
	}
	out := make([]JobInfo, 0, len(rows))
	for i := range rows {
		out = append(out, e.info(&rows[i]))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Ready.Before(out[j].Ready) || (out[i].Ready.Equal(out[j].Ready) && out[i].ID < out[j].ID)
	})
	return out
}

func parseJobID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return 0, notFound("job", id)
	}
	return n, nil
}

func (e *Engine) row(id string) (*jobRow, error) {
	n, err := parseJobID(id)
	if err != nil {
		return nil, err
	}
	r, err := e.db.get(n)
	if err != nil {
		return nil, err
	}
	e.jmu.Lock()
	if j := e.jobs[id]; j != nil {
		r.Attempts = j.row.Attempts
	}
	e.jmu.Unlock()
	return r, nil
}

// Job returns the job id and the history of its key (at most 50 builds).
func (e *Engine) Job(id string) (JobDetail, error) {
	r, err := e.row(id)
	if err != nil {
		return JobDetail{}, err
	}
	d := JobDetail{JobInfo: e.info(r)}
	hist, err := e.db.history(r.Op, r.Digest, 50)
	if err != nil {
		return JobDetail{}, err
	}
	for _, h := range hist {
		d.History = append(d.History, e.info(h))
	}
	one := []JobInfo{d.JobInfo}
	e.markLive(one)
	d.JobInfo = one[0]
	return d, nil
}

// Query returns the cached results matching q, newest first, including results no
// longer in the live graph.
func (e *Engine) Query(q Query) ([]JobInfo, error) {
	s, args, err := q.sql(e.db.db)
	if err != nil {
		return nil, err
	}
	rows, err := e.db.rows(s, args...)
	if err != nil {
		return nil, err
	}
	out := make([]JobInfo, 0, len(rows))
	for _, r := range rows {
		ji := e.info(r)
		if q.wantsState(ji.State) {
			out = append(out, ji)
		}
	}
	e.markLive(out)
	return out, nil
}

func (q Query) wantsState(s JobState) bool {
	if len(q.States) == 0 {
		return true
	}
	for _, x := range q.States {
		if x == s {
			return true
		}
	}
	return false
}

// LogChunk is part of a job's log.
type LogChunk struct {
	Data []byte `json:"data"`
	Next int64  `json:"next"` // offset to read from next
	Done bool   `json:"done"` // the job has finished and Next is the end of its log
}

// openLog opens job id's log for reading from offset.
func (e *Engine) openLog(ctx context.Context, id string, offset int64) (*logFollower, error) {
	r, err := e.row(id)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, invalid("log of job %s: negative offset %d", id, offset)
	}
	e.jmu.Lock()
	j := e.jobs[id]
	e.jmu.Unlock()
	where := e.logs.where(r.ID)
	f, err := e.logs.open(r.ID)
	if err != nil {
		if r.LogDeleted {
			return nil, fmt.Errorf("log of job %s was deleted by log retention", id)
		}
		if errors.Is(err, fs.ErrNotExist) {
			if j == nil && r.State != "ok" && r.State != "failed" && r.LogSize == 0 {
				return &logFollower{ctx: ctx, f: nil}, nil
			}
			return nil, fmt.Errorf("log of job %s: file %s is missing", id, where)
		}
		return nil, fmt.Errorf("log of job %s: %w", id, err)
	}
	stored, err := f.size()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log of job %s: %w", id, err)
	}
	if r.LogDeleted && stored == 0 {
		f.Close()
		return nil, fmt.Errorf("log of job %s was deleted by log retention", id)
	}
	lf := &logFollower{ctx: ctx, f: f, where: where, size: stored, offset: offset}
	switch {
	case j != nil:
		lf.live = j.log
		lf.size, _, _ = j.log.state()
	case r.finished() && r.LogSize > 0 && stored < r.LogSize:
		f.Close()
		return nil, fmt.Errorf("log of job %s is corrupt: %s has %d bytes but %d were written (truncated)", id, where, stored, r.LogSize)
	case !r.finished() && e.logs.shared():
		lf.poll = e.pollLog(f, r.ID)
	}
	if offset > lf.size {
		f.Close()
		return nil, invalid("log of job %s: offset %d is beyond its end (%d bytes)", id, offset, lf.size)
	}
	return lf, nil
}

// pollLog reads whether job id, running in another engine, has finished, then the size
// of its log: once it has, the size read after is final.
func (e *Engine) pollLog(f logReader, id int64) func() (int64, bool, error) {
	return func() (int64, bool, error) {
		r, err := e.db.get(id)
		if err != nil {
			return 0, false, err
		}
		size, err := f.size()
		return size, r.finished(), err
	}
}

// ReadLog returns up to max bytes (default 1 MiB) of job id's log from offset, without
// waiting.
func (e *Engine) ReadLog(id string, offset int64, max int) (LogChunk, error) {
	if max <= 0 {
		max = 1 << 20
	}
	lf, err := e.openLog(context.Background(), id, offset)
	if err != nil {
		return LogChunk{}, err
	}
	if lf.f == nil {
		return LogChunk{Next: 0}, nil
	}
	defer lf.Close()
	size, done := lf.size, lf.poll == nil
	if lf.live != nil {
		size, done, _ = lf.live.state()
	}
	n := size - offset
	if n > int64(max) {
		n, done = int64(max), false
	}
	buf := make([]byte, n)
	k, err := lf.f.ReadAt(buf, offset)
	if err != nil && err != io.EOF {
		return LogChunk{}, fmt.Errorf("read log of job %s: %w", id, err)
	}
	if int64(k) < n {
		return LogChunk{}, fmt.Errorf("log of job %s is corrupt: shorter than recorded (%d < %d bytes)", id, offset+int64(k), size)
	}
	return LogChunk{Data: buf, Next: offset + n, Done: done}, nil
}

// FollowLog returns a reader of job id's log from offset that waits for new output while
// the job runs and ends (io.EOF) when the job has finished and its log is read; it stops
// with ctx's error when ctx ends.
func (e *Engine) FollowLog(ctx context.Context, id string, offset int64) (io.ReadCloser, error) {
	lf, err := e.openLog(ctx, id, offset)
	if err != nil {
		return nil, err
	}
	if lf.f == nil {
		return io.NopCloser(emptyReader{}), nil
	}
	return lf, nil
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }

func (e *Engine) liveJob(id string) (*runningJob, error) {
	if _, err := e.row(id); err != nil {
		return nil, err
	}
	e.jmu.Lock()
	j := e.jobs[id]
	e.jmu.Unlock()
	if j == nil {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotActive)
	}
	return j, nil
}

// Cancel cancels the active job id; it finishes as failed with kind "cancelled".
func (e *Engine) Cancel(id string) error {
	j, err := e.liveJob(id)
	if err != nil {
		return err
	}
	e.log.Info("job cancelled by an operator", "job", id)
	j.cancel(errByOperator)
	return nil
}

// StartNow starts the active job id at once: confirmed, and beyond its pool's slots.
func (e *Engine) StartNow(id string) error {
	j, err := e.liveJob(id)
	if err != nil {
		return err
	}
	e.jmu.Lock()
	j.confirmed, j.startNow = true, true
	p, w := j.pool, j.waiter
	e.jmu.Unlock()
	if p != nil && w != nil {
		p.bypass(w)
	}
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return nil
}

// Confirm lets the job id, held for confirmation, go on.
func (e *Engine) Confirm(id string) error {
	j, err := e.liveJob(id)
	if err != nil {
		return err
	}
	e.jmu.Lock()
	j.confirmed = true
	e.jmu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return nil
}

// RebuildResult says what a rebuild request did.
type RebuildResult struct {
	// JobID is the new job, when the key is in the live graph and a job started.
	JobID string `json:"job_id,omitempty"`
	// Deferred: the key is not in the live graph; it is rebuilt when next wanted.
	Deferred bool `json:"deferred,omitempty"`
}

// Rebuild builds the key of job id again: at once when the live graph wants it, else
// the next time a pipeline wants it.
func (e *Engine) Rebuild(id string) (RebuildResult, error) {
	r, err := e.row(id)
	if err != nil {
		return RebuildResult{}, err
	}
	return e.rebuildKey(r.Op, r.Digest)
}

func (e *Engine) rebuildKey(op, digest string) (RebuildResult, error) {
	done := make(chan RebuildResult, 1)
	e.mu.Lock()
	ent := e.entries[entryKey{op, digest}]
	if ent != nil && ent.refs > 0 && e.running {
		if ent.job != nil {
			id := ent.job.id
			e.mu.Unlock()
			return RebuildResult{JobID: id}, nil
		}
		e.mu.Unlock()
		e.post(func() {
			if ent.job == nil && ent.refs > 0 {
				ent.start(LaneBackground, nil)
				ent.touch()
			}
			var res RebuildResult
			if ent.job != nil {
				res.JobID = ent.job.id
			}
			done <- res
		})
		select {
		case res := <-done:
			return res, nil
		case <-time.After(10 * time.Second):
			return RebuildResult{}, fmt.Errorf("rebuild of %s: the engine did not answer", op)
		}
	}
	e.mu.Unlock()
	if _, err := e.db.setRebuild(op, digest); err != nil {
		return RebuildResult{}, err
	}
	return RebuildResult{Deferred: true}, nil
}

// Rebuild builds again every result of op that the live graph wants and whose input
// match accepts, and returns how many it rebuilt. It is the typed way for a service to
// act on its own jobs ("re-run the checks of this commit") without naming keys.
func (op *Op[In, Out]) Rebuild(e *Engine, match func(In) bool) (int, error) {
	d := op.def()
	e.mu.Lock()
	var digests []string
	for k, ent := range e.entries {
		if k.op != d.name || ent.refs == 0 || ent.input == nil {
			continue
		}
		if match(as[In](ent.input)) {
			digests = append(digests, k.digest)
		}
	}
	e.mu.Unlock()
	sort.Strings(digests)
	for i, dg := range digests {
		if _, err := e.rebuildKey(d.name, dg); err != nil {
			return i, fmt.Errorf("rebuild %s: %w", d.name, err)
		}
	}
	return len(digests), nil
}

// RebuildQuery rebuilds the key of every result matching q (each key once) and returns
// how many keys it rebuilt.
func (e *Engine) RebuildQuery(q Query) (int, error) {
	infos, err := e.Query(q)
	if err != nil {
		return 0, err
	}
	seen := map[entryKey]bool{}
	n := 0
	for _, ji := range infos {
		k := entryKey{ji.Op, ji.KeyDigest}
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, err := e.rebuildKey(k.op, k.digest); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Status is the engine's state as a console shows it.
type Status struct {
	Started       time.Time    `json:"started"`
	Running       bool         `json:"running"` // a pipeline is being evaluated
	Pass          uint64       `json:"pass"`
	LastPass      time.Time    `json:"last_pass,omitzero"`
	ConfirmLevel  Level        `json:"confirm_level"`
	AutoReleaseAt time.Time    `json:"auto_release_at,omitzero"` // when held jobs are all released
	AutoReleased  bool         `json:"auto_released"`
	ActiveJobs    int          `json:"active_jobs"`
	ParkedJobs    int          `json:"parked_jobs"` // active jobs waiting outside (see Await), without a slot
	Pools         []PoolStatus `json:"pools"`
}

// Status returns the engine's state.
func (e *Engine) Status() Status {
	e.mu.Lock()
	s := Status{Started: e.started, Running: e.running, Pass: e.pass, LastPass: e.lastPass}
	e.mu.Unlock()
	e.jmu.Lock()
	s.ConfirmLevel, s.AutoReleaseAt, s.AutoReleased, s.ActiveJobs = e.confirmLevel, e.autoReleaseAt, e.autoReleased, len(e.jobs)
	s.ParkedJobs = e.parked
	pools := make([]*pool, 0, len(e.pools))
	for _, p := range e.pools {
		pools = append(pools, p)
	}
	e.jmu.Unlock()
	for _, p := range pools {
		s.Pools = append(s.Pools, p.status())
	}
	sort.Slice(s.Pools, func(i, j int) bool { return s.Pools[i].Name < s.Pools[j].Name })
	return s
}

// ConfirmLevel is the level above which jobs wait for confirmation.
func (e *Engine) ConfirmLevel() Level {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	return e.confirmLevel
}

// SetConfirmLevel changes the confirm level; raising it releases the jobs no longer above it.
func (e *Engine) SetConfirmLevel(l Level) error {
	if l < LevelHarmless || l > LevelDangerous {
		return invalid("confirm level %d out of range", int(l))
	}
	e.jmu.Lock()
	e.confirmLevel = l
	close(e.levelChanged)
	e.levelChanged = make(chan struct{})
	e.jmu.Unlock()
	e.log.Info("confirm level set", "level", l)
	e.metrics.confirmLevel.Set(float64(l))
	e.notify()
	return nil
}
