// Package cluster is the build fleet: a scheduler that queues build jobs per pool and
// places them on workers, the workers that run them with the builder, and the client the
// engine and the command line use to submit, follow and administer jobs. Everything talks
// over NATS with JetStream, which also holds the scheduler's state.
package cluster

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Outcome says how a job ended, and whose fault a failure is.
type Outcome string

// The outcomes of a job.
const (
	OutcomeOK             Outcome = "ok"             // the build succeeded
	OutcomeFailed         Outcome = "failed"         // the build itself failed (the package's fault)
	OutcomeInfrastructure Outcome = "infrastructure" // no worker, lost workers, disk full, timeout …
	OutcomeCancelled      Outcome = "cancelled"      // cancelled before it ended
)

// JobState is where a job is in its life.
type JobState string

// The states of a job.
const (
	StateQueued  JobState = "queued"
	StateRunning JobState = "running"
	StateDone    JobState = "done"
)

// Duration is a time.Duration that reads and writes as a Go duration string in JSON.
type Duration time.Duration

// MarshalText writes d as "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Request is what a client submits: one build for one pool.
type Request struct {
	ID        string   `json:"id,omitempty"`     // ticket chosen by the client (idempotent resubmission); empty: one is made
	Pool      string   `json:"pool"`             // e.g. linux-x86_64
	Client    string   `json:"client"`           // who submits, for fair share
	Spec      string   `json:"spec"`             // builder spec text (OBuilder S-expression)
	Source    string   `json:"source,omitempty"` // digest of the source tree blob (see Client.PutSource)
	Secrets   []string `json:"secrets,omitempty"`
	CacheHint string   `json:"cache_hint,omitempty"`
	Urgent    bool     `json:"urgent,omitempty"`
	Timeout   Duration `json:"timeout,omitempty"`
}

// Validate names the first field of r that is wrong.
func (r *Request) Validate() error {
	switch {
	case !validName(r.Pool):
		return fmt.Errorf("field pool: %q is not a pool name (letters, digits, - _ .)", r.Pool)
	case !validName(r.Client):
		return fmt.Errorf("field client: %q is not a client name (letters, digits, - _ .)", r.Client)
	case strings.TrimSpace(r.Spec) == "":
		return fmt.Errorf("field spec: empty")
	case r.ID != "" && !validName(r.ID):
		return fmt.Errorf("field id: %q is not a ticket name", r.ID)
	case r.Source != "" && !validDigest(r.Source):
		return fmt.Errorf("field source: %q is not a sha256 digest", r.Source)
	case r.Timeout < 0:
		return fmt.Errorf("field timeout: negative")
	case len(r.CacheHint) > 512:
		return fmt.Errorf("field cache_hint: longer than 512 bytes")
	}
	for i, s := range r.Secrets {
		if !validName(s) {
			return fmt.Errorf("field secrets[%d]: %q is not a secret name", i, s)
		}
	}
	return nil
}

// Result is how a job ended.
type Result struct {
	Outcome  Outcome  `json:"outcome"`
	Message  string   `json:"message,omitempty"`
	Snapshot string   `json:"snapshot,omitempty"` // builder snapshot id of a successful build
	Worker   string   `json:"worker,omitempty"`
	Attempts int      `json:"attempts"`
	Duration Duration `json:"duration"`
	Final    bool     `json:"final,omitempty"` // an infrastructure failure that another try would repeat (a timeout)
	// Output is the typed result of a runner that has one (an OutputRunner), as JSON:
	// for example the store paths of a Nix build, or why it failed.
	Output json.RawMessage `json:"output,omitempty"`
}

// Event is one line of a job's history, shown to users ("worker lost, retried").
type Event struct {
	Time time.Time `json:"time"`
	What string    `json:"what"`
}

// Job is the scheduler's record of one submitted build; it is what JetStream stores.
type Job struct {
	Request
	State      JobState  `json:"state"`
	Submitted  time.Time `json:"submitted"`
	Attempt    int       `json:"attempt"` // 1 for the first run; a run's fence token
	Worker     string    `json:"worker,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	Cancel     bool      `json:"cancel,omitempty"` // cancel requested while running
	Avoid      []string  `json:"avoid,omitempty"`  // workers that failed it for infrastructure reasons
	Result     *Result   `json:"result,omitempty"`
	History    []Event   `json:"history,omitempty"`

	// in memory only
	cost     time.Duration
	seq      uint64
	reserved string // worker whose own queue holds it
	removed  bool   // lazily dropped from a queue
}

func (j *Job) event(now time.Time, format string, args ...any) {
	j.History = append(j.History, Event{Time: now, What: fmt.Sprintf(format, args...)})
	if len(j.History) > 50 {
		j.History = append(j.History[:1], j.History[len(j.History)-49:]...)
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s[0] != '.' && s[len(s)-1] != '.' && !strings.Contains(s, "..")
}

func validDigest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256-")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
