package deployer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/forge"
)

// The outcomes of a deploy.
const (
	OutcomeRunning    = "running"
	OutcomeLive       = "live"
	OutcomeRolledBack = "rolled-back" // the health check failed; the previous version serves
	OutcomeFailed     = "failed"      // an error before or while deploying; nothing was switched
	OutcomeReplaced   = "replaced"    // was live, another deploy replaced it
)

// Record is one deploy in a service's history.
type Record struct {
	ID       int       `json:"id"`
	Service  string    `json:"service"`
	Stage    string    `json:"stage"` // staging, production, or publish for a push that failed
	Kind     string    `json:"kind"`  // deploy, promote, rollback
	Commit   string    `json:"commit"`
	Digest   string    `json:"digest,omitempty"`
	By       string    `json:"by,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Outcome  string    `json:"outcome"`
	Message  string    `json:"message,omitempty"`
	// Attempts is how many times the deploy was tried (more than one after
	// infrastructure failures); Infrastructure names such a failure's kind
	// (host-unreachable, registry-unreachable, engine-unreachable).
	Attempts       int    `json:"attempts,omitempty"`
	Infrastructure string `json:"infrastructure,omitempty"`
	// Job is the engine job of the deploy (or of the push that failed), with its log.
	Job string `json:"job,omitempty"`
}

// Build is one commit built for deployability.
type Build struct {
	Commit   string      `json:"commit"`
	Ref      string      `json:"ref"`
	Tag      string      `json:"tag"`
	State    forge.State `json:"state"`
	Message  string      `json:"message,omitempty"`
	Digest   string      `json:"digest,omitempty"`
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished,omitzero"`
	// Snapshots are the builder's results of a spec, by architecture.
	Snapshots map[string]string `json:"snapshots,omitempty"`
	// Job and PushJob are the engine jobs of the build and of its push.
	Job     string `json:"job,omitempty"`
	PushJob string `json:"push_job,omitempty"`
}

// Live is what runs on one stage now.
type Live struct {
	Commit    string    `json:"commit"`
	Digest    string    `json:"digest"`
	Since     time.Time `json:"since"`
	Healthy   bool      `json:"healthy"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
	Check     string    `json:"check,omitempty"`
	// CheckJob is the engine job of the last periodic check.
	CheckJob string `json:"check_job,omitempty"`
}

// Pending is a digest that passed staging and waits for confirmation.
type Pending struct {
	Commit string    `json:"commit"`
	Digest string    `json:"digest"`
	Since  time.Time `json:"since"`
}

type serviceState struct {
	Builds    map[string]*Build `json:"builds"` // by commit
	Refs      map[string]string `json:"refs"`   // ref → commit
	Live      map[string]*Live  `json:"live"`   // by stage
	Pending   *Pending          `json:"pending,omitempty"`
	Attempted string            `json:"attempted,omitempty"`
}

// state is what the deployer keeps across restarts, saved as JSON.
type state struct {
	path string
	mu   sync.Mutex
	S    map[string]*serviceState `json:"services"`
	H    []Record                 `json:"history"`
}

func loadState(path string) (*state, error) {
	st := &state{path: path, S: map[string]*serviceState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deployer state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("deployer state %s: %w", path, err)
	}
	// A deploy interrupted by a restart did not finish.
	for i := range st.H {
		if st.H[i].Outcome == OutcomeRunning {
			st.H[i].Outcome, st.H[i].Message = OutcomeFailed, "interrupted by a restart"
		}
	}
	return st, nil
}

func (st *state) save() error {
	st.mu.Lock()
	b, err := json.MarshalIndent(st, "", " ")
	st.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := st.path + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, st.path)
}

func (st *state) svc(name string) *serviceState {
	s, ok := st.S[name]
	if !ok {
		s = &serviceState{Builds: map[string]*Build{}, Refs: map[string]string{}, Live: map[string]*Live{}}
		st.S[name] = s
	}
	return s
}

func (st *state) build(service, commit string) *Build {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.svc(service).Builds[commit]
}

func (st *state) putBuild(service string, b *Build) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if b.State == forge.Running || b.State == forge.Error { // interrupted, or the infrastructure failed: built again next time
		return
	}
	st.svc(service).Builds[b.Commit] = b
}

func (st *state) setRefs(service string, refs map[string]string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.svc(service).Refs = refs
}

func (st *state) attempted(service string) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.svc(service).Attempted
}

func (st *state) setAttempted(service, commit string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.svc(service).Attempted = commit
}

func (st *state) setPublished(service, commit, digest, job string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if b := st.svc(service).Builds[commit]; b != nil {
		b.Digest, b.PushJob = digest, job
	}
}

func (st *state) pending(service string) *Pending {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.svc(service).Pending
}

func (st *state) setPending(service string, p *Pending) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.svc(service).Pending = p
}

func (st *state) live(service, stage string) *Live {
	st.mu.Lock()
	defer st.mu.Unlock()
	if l := st.svc(service).Live[stage]; l != nil {
		c := *l
		return &c
	}
	return nil
}

// setHealth records a check of a live stage and reports whether its health changed.
func (st *state) setHealth(service, stage string, ok bool, out, job string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.svc(service).Live[stage]
	if l == nil {
		return false
	}
	changed := l.Healthy != ok
	l.Healthy, l.CheckedAt, l.Check, l.CheckJob = ok, time.Now().UTC(), out, job
	return changed
}

// wasLive finds the commit of a digest that was live on some stage of the service.
func (st *state) wasLive(service, digest string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range slices.Backward(st.H) {
		if r.Service == service && r.Digest == digest && (r.Outcome == OutcomeLive || r.Outcome == OutcomeReplaced) {
			return r.Commit, true
		}
	}
	return "", false
}

// begin adds a running record and returns its id.
func (st *state) begin(r Record) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	r.ID = len(st.H) + 1
	r.Outcome = OutcomeRunning
	st.H = append(st.H, r)
	return r.ID
}

// setJob records the engine job of a running deploy.
func (st *state) setJob(id int, job string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.H[id-1].Job = job
}

// retrying records that the attempt of a running deploy failed for the
// infrastructure's sake (kind) and that it is tried again.
func (st *state) retrying(id, attempt int, kind, msg string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := &st.H[id-1]
	r.Attempts, r.Infrastructure, r.Message = attempt+1, kind, msg
}

// end finishes a record (infra: the kind of an infrastructure failure, or ""); a live outcome makes it the stage's live version.
func (st *state) end(id int, outcome, msg, infra string) Record {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := &st.H[id-1]
	r.Finished, r.Outcome, r.Message = time.Now().UTC(), outcome, msg
	if infra != "" {
		r.Infrastructure = infra
	}
	if outcome == OutcomeLive {
		for i := range st.H {
			o := &st.H[i]
			if o.ID != id && o.Service == r.Service && o.Stage == r.Stage && o.Outcome == OutcomeLive {
				o.Outcome = OutcomeReplaced
			}
		}
		st.svc(r.Service).Live[r.Stage] = &Live{Commit: r.Commit, Digest: r.Digest, Since: r.Finished, Healthy: true, CheckedAt: r.Finished}
	}
	return *r
}

// history returns a service's records, newest first.
func (st *state) history(service string) []Record {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []Record
	for _, r := range slices.Backward(st.H) {
		if r.Service == service {
			out = append(out, r)
		}
	}
	return out
}

// snapshot copies one service's state.
func (st *state) snapshot(service string) serviceState {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.svc(service)
	c := serviceState{Builds: map[string]*Build{}, Refs: map[string]string{}, Live: map[string]*Live{}, Attempted: s.Attempted}
	for k, v := range s.Builds {
		b := *v
		c.Builds[k] = &b
	}
	for k, v := range s.Refs {
		c.Refs[k] = v
	}
	for k, v := range s.Live {
		l := *v
		c.Live[k] = &l
	}
	if s.Pending != nil {
		p := *s.Pending
		c.Pending = &p
	}
	return c
}
