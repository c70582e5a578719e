package web

import (
	"context"
	"io"
	"time"

	"github.com/kiln-ci/kiln/current"
)

// ErrNotFound is matched (errors.Is) by an Engine's errors about an unknown job, log or rule.
var ErrNotFound = current.ErrNotFound

// State is the state of a pipeline node or job as the console shows it.
type State string

// The states the console knows; each has its own colour.
const (
	StateOk          State = "ok"
	StateFailed      State = "failed"
	StateBlocked     State = "blocked"
	StateReady       State = "ready"
	StateRunning     State = "running"
	StateWaiting     State = "waiting-for-confirmation"
	StateInterrupted State = "interrupted"
)

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case StateOk, StateFailed, StateBlocked, StateReady, StateRunning, StateWaiting, StateInterrupted:
		return true
	}
	return false
}

// Active reports whether s is a state of unfinished work.
func (s State) Active() bool { return s == StateReady || s == StateRunning || s == StateWaiting }

// Node is one stage of the live pipeline graph.
type Node struct {
	ID      string   `json:"id"`
	Label   string   `json:"label"`
	State   State    `json:"state"`
	Message string   `json:"message,omitempty"`
	JobID   string   `json:"job_id,omitempty"`
	Latched bool     `json:"latched,omitempty"`
	Groups  []string `json:"groups,omitempty"` // ids of the groups holding the node, outermost first
	Inputs  []string `json:"inputs,omitempty"` // ids of the nodes it depends on
}

// GroupInfo describes a group of nodes (a ListMap, one of its items, a Collapse).
type GroupInfo struct {
	ID       string `json:"id"`
	Label    string `json:"label"`
	Kind     string `json:"kind"`
	Collapse bool   `json:"collapse,omitempty"` // drawn collapsed whatever its size
}

// Graph is a snapshot of the live pipeline.
type Graph struct {
	Nodes  []Node      `json:"nodes"`
	Groups []GroupInfo `json:"groups"`
}

// Job is one run of a cached operation.
type Job struct {
	ID          string    `json:"id"`
	Op          string    `json:"op"`
	Key         string    `json:"key"`
	Label       string    `json:"label"`
	Build       int       `json:"build"`
	State       State     `json:"state"`
	Why         string    `json:"why,omitempty"` // why an active job waits
	Lane        string    `json:"lane,omitempty"`
	Level       string    `json:"level,omitempty"`
	Attempts    int       `json:"attempts,omitempty"`
	Message     string    `json:"message,omitempty"` // why it failed (a log rule's explanation if one matched)
	FailureKind string    `json:"failure_kind,omitempty"`
	Live        bool      `json:"live"` // wanted by the live pipeline
	Ready       time.Time `json:"ready,omitzero"`
	Running     time.Time `json:"running,omitzero"`
	Finished    time.Time `json:"finished,omitzero"`
}

// LogChunk is a piece of a job's log.
type LogChunk struct {
	Data []byte `json:"-"`
	Next int64  `json:"next"` // offset just after Data
	Done bool   `json:"done"` // the job finished and Next is the end of its log
}

// Filter selects stored results for /query.
type Filter struct {
	Op     string    `json:"op,omitempty"`
	State  State     `json:"state,omitempty"`
	Key    string    `json:"key,omitempty"` // substring of the key or label
	Since  time.Time `json:"since,omitzero"`
	Before time.Time `json:"before,omitzero"`
	Kind   string    `json:"failure_kind,omitempty"` // work, timeout, cancelled, ...
	Latest bool      `json:"latest,omitempty"`       // only the latest build of each key
	Limit  int       `json:"limit"`
	Offset int       `json:"offset,omitempty"` // results skipped, newest first
}

// LogRule turns a log line matching Pattern into a human explanation of a failure.
type LogRule struct {
	ID          string    `json:"id"`
	Pattern     string    `json:"pattern"`
	Explanation string    `json:"explanation"`
	Created     time.Time `json:"created,omitzero"`
}

// ConfirmState is the engine's confirmation level and auto-release.
type ConfirmState struct {
	Level       string    `json:"level"`
	Levels      []string  `json:"levels"`
	AutoRelease time.Time `json:"auto_release,omitzero"` // when the hold lifts by itself
	Released    bool      `json:"released"`
}

// Pool is a pool of job slots and its two waiting lanes.
type Pool struct {
	Name       string `json:"name"`
	Slots      int    `json:"slots"`
	InUse      int    `json:"in_use"`
	Urgent     int    `json:"urgent_waiting"`
	Background int    `json:"background_waiting"`
}

// Unbounded reports whether the pool has so many slots that they are no limit: its jobs
// wait elsewhere (the fleet's pool of jobs that run on the build fleet).
func (p Pool) Unbounded() bool { return p.Slots >= 1<<20 }

// RebuildResult says what a rebuild request did.
type RebuildResult struct {
	JobID    string `json:"job_id,omitempty"`   // the new (or already running) job
	Deferred bool   `json:"deferred,omitempty"` // not in the live graph: rebuilt when next wanted
}

// RuleMatch is the outcome of testing a log rule's pattern against one failed job's log.
type RuleMatch struct {
	JobID   string `json:"job_id"`
	Label   string `json:"label"`
	Matched bool   `json:"matched"`
	Line    int    `json:"line,omitempty"`
	Text    string `json:"text,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Engine is what the console needs of the pipeline engine.
type Engine interface {
	Graph(ctx context.Context) (Graph, error)
	// Subscribe returns a channel that receives a value whenever the graph or a job
	// changes, and a function ending the subscription.
	Subscribe() (<-chan struct{}, func())
	ActiveJobs(ctx context.Context) ([]Job, error)
	// Job returns a job and the history of its key, newest first.
	Job(ctx context.Context, id string) (Job, []Job, error)
	// ReadLog reads at most max bytes of a job's log from offset, without waiting.
	ReadLog(ctx context.Context, id string, offset int64, max int) (LogChunk, error)
	// FollowLog reads a job's log from offset, waiting for more while the job runs;
	// it ends with io.EOF when the job has finished.
	FollowLog(ctx context.Context, id string, offset int64) (io.ReadCloser, error)
	Cancel(ctx context.Context, id string) error
	// Rebuild builds the key of a stored result again.
	Rebuild(ctx context.Context, id string) (RebuildResult, error)
	StartNow(ctx context.Context, id string) error
	Query(ctx context.Context, f Filter) ([]Job, error)
	LogRules(ctx context.Context) ([]LogRule, error)
	AddLogRule(ctx context.Context, pattern, explanation string) (LogRule, error)
	DeleteLogRule(ctx context.Context, id string) error
	// TestLogRule tries pattern on the logs of recent failed jobs, storing nothing.
	TestLogRule(ctx context.Context, pattern string) ([]RuleMatch, error)
	Confirm(ctx context.Context) (ConfirmState, error)
	Pools(ctx context.Context) ([]Pool, error)
	SetConfirm(ctx context.Context, level string) error
}
