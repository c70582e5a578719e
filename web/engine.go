package web

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by an Engine for an unknown job, node or rule id.
var ErrNotFound = errors.New("not found")

// State is the state of a pipeline node or job as the console shows it.
type State string

// The states the console knows; each has its own colour.
const (
	StateOk        State = "ok"
	StateFailed    State = "failed"
	StateBlocked   State = "blocked"
	StateReady     State = "ready"
	StateRunning   State = "running"
	StateWaiting   State = "waiting-for-confirmation"
	StateCancelled State = "cancelled"
)

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case StateOk, StateFailed, StateBlocked, StateReady, StateRunning, StateWaiting, StateCancelled:
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
	Group   string   `json:"group,omitempty"`  // the ListMap group the node belongs to
	Inputs  []string `json:"inputs,omitempty"` // ids of the nodes it depends on
}

// Graph is a snapshot of the live pipeline.
type Graph struct {
	Nodes []Node `json:"nodes"`
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
	Confirm     string    `json:"confirm,omitempty"`
	Error       string    `json:"error,omitempty"`
	Explanation string    `json:"explanation,omitempty"` // from a log rule
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
	Limit  int       `json:"limit"`
}

// LogRule turns a log line matching Pattern into a human explanation of a failure.
type LogRule struct {
	ID          string `json:"id"`
	Pattern     string `json:"pattern"`
	Explanation string `json:"explanation"`
	Score       int    `json:"score"`
}

// ConfirmState is the engine's confirmation level and auto-release.
type ConfirmState struct {
	Level       string    `json:"level"`
	Levels      []string  `json:"levels"`
	AutoRelease time.Time `json:"auto_release,omitzero"` // when the hold lifts by itself
	Released    bool      `json:"released"`
}

// Engine is what the console needs of the pipeline engine.
type Engine interface {
	Graph(ctx context.Context) (Graph, error)
	// Changed returns a channel closed at the next change of the graph or of any job.
	Changed() <-chan struct{}
	ActiveJobs(ctx context.Context) ([]Job, error)
	Job(ctx context.Context, id string) (Job, error)
	History(ctx context.Context, op, key string, limit int) ([]Job, error)
	// ReadLog reads at most max bytes of a job's log from offset.
	ReadLog(ctx context.Context, id string, offset int64, max int) (LogChunk, error)
	// WaitLog returns once the log of job id is longer than offset or the job finished.
	WaitLog(ctx context.Context, id string, offset int64) error
	Cancel(ctx context.Context, id string) error
	// Rebuild runs the operation of a stored result again and returns the new job's id.
	Rebuild(ctx context.Context, id string) (string, error)
	StartNow(ctx context.Context, id string) error
	Query(ctx context.Context, f Filter) ([]Job, error)
	Ops(ctx context.Context) ([]string, error)
	LogRules(ctx context.Context) ([]LogRule, error)
	AddLogRule(ctx context.Context, r LogRule) (LogRule, error)
	DeleteLogRule(ctx context.Context, id string) error
	Confirm(ctx context.Context) (ConfirmState, error)
	SetConfirm(ctx context.Context, level string) error
}
