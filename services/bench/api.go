package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// Published is told of each judged run (to set the commit status and the PR comment).
type Published func(ctx context.Context, c Comparison)

// API is the authenticated submit endpoint: results of a benchmark run elsewhere, sent
// with a token of the repository (kiln bench token).
type API struct {
	Store   *store.Store
	Logger  *slog.Logger
	Options detect.Options
	// Target is the branch PRs are compared with when not interleaved (default main).
	Target string
	// MaxBytes bounds a submitted output (default 256 MiB).
	MaxBytes int64
	// OnJudged, when set, is called after each run is stored and judged.
	OnJudged Published

	submits *prometheus.CounterVec
}

// NewAPI returns the API with its metrics registered on reg.
func NewAPI(a API, reg prometheus.Registerer) (*API, error) {
	a.submits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_bench_submits_total",
		Help: "Benchmark results submitted through the API, by outcome.",
	}, []string{"outcome"})
	if err := reg.Register(a.submits); err != nil {
		return nil, fmt.Errorf("bench api metrics: %w", err)
	}
	if a.Target == "" {
		a.Target = "main"
	}
	if a.MaxBytes <= 0 {
		a.MaxBytes = 256 << 20
	}
	if a.Logger == nil {
		a.Logger = slog.Default()
	}
	return &a, nil
}

// SubmitResponse is the answer to a submit.
type SubmitResponse struct {
	Run        int64             `json:"run"`
	Metrics    int               `json:"metrics"`
	Errors     []*benchfmt.Error `json:"errors,omitempty"`
	Comparison *Comparison       `json:"comparison,omitempty"`
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

// ServeHTTP takes POST ?repo=FORGE/OWNER/NAME&commit=SHA[&branch=B|&pr=N&base=SHA]
// [&env=E][&arm=base&run=ID][&commit_time=RFC3339] with the benchmark's output as the
// body and "Authorization: Bearer TOKEN".
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		httpError(w, http.StatusMethodNotAllowed, "POST the benchmark's output")
		return
	}
	q := r.URL.Query()
	repo := q.Get("repo")
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || repo == "" {
		a.submits.WithLabelValues("unauthorized").Inc()
		httpError(w, http.StatusUnauthorized, "a repo parameter and an Authorization: Bearer token of that repository are needed")
		return
	}
	valid, err := a.Store.CheckToken(r.Context(), repo, token)
	if err != nil {
		a.submits.WithLabelValues("error").Inc()
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if !valid {
		a.submits.WithLabelValues("unauthorized").Inc()
		httpError(w, http.StatusForbidden, "the token is not one of %s", repo)
		return
	}
	run, arm, err := runOf(q)
	if err != nil {
		a.submits.WithLabelValues("bad-request").Inc()
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	run.Repo = repo
	p := benchfmt.NewParser(benchfmt.Limits{})
	if _, err := io.Copy(p, http.MaxBytesReader(w, r.Body, a.MaxBytes)); err != nil {
		a.submits.WithLabelValues("bad-request").Inc()
		httpError(w, http.StatusRequestEntityTooLarge, "reading the output: %v", err)
		return
	}
	out := p.Close()
	resp, err := a.Submit(r.Context(), run, arm, out)
	if err != nil {
		a.submits.WithLabelValues("error").Inc()
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	a.submits.WithLabelValues("stored").Inc()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func runOf(q map[string][]string) (store.Run, store.Arm, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	run := store.Run{Commit: get("commit"), Branch: get("branch"), Base: get("base"), Env: get("env")}
	if run.Commit == "" {
		return run, "", errors.New("the commit parameter is missing")
	}
	if s := get("pr"); s != "" {
		pr, err := strconv.ParseInt(s, 10, 64)
		if err != nil || pr <= 0 {
			return run, "", fmt.Errorf("pr %q is not a pull request number", s)
		}
		run.PR = pr
	}
	if run.PR == 0 && run.Branch == "" {
		return run, "", errors.New("a branch or a pr parameter is needed")
	}
	if s := get("commit_time"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return run, "", fmt.Errorf("commit_time %q is not RFC 3339", s)
		}
		run.CommitTime = t
	}
	arm := store.Arm(get("arm"))
	if arm != store.Head && arm != store.Base {
		return run, "", fmt.Errorf("arm %q is neither empty nor base", arm)
	}
	if s := get("run"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return run, "", fmt.Errorf("run %q is not a run id", s)
		}
		run.ID = id
	}
	return run, arm, nil
}

// Submit stores out as the results of run's arm (a new run unless run.ID is set),
// judges the run and tells OnJudged.
func (a *API) Submit(ctx context.Context, run store.Run, arm store.Arm, out *benchfmt.Output) (*SubmitResponse, error) {
	return a.record(ctx, run, map[store.Arm]*benchfmt.Output{arm: out}, store.Machine{}, nil)
}

// Record stores what a job run here printed (both arms of an interleaved run) with the
// machine's state as a new run, judges it and tells OnJudged. A job that stopped early
// is a failed run that keeps the results printed before it stopped.
func (a *API) Record(ctx context.Context, run store.Run, o Outcome) (*SubmitResponse, error) {
	arms := map[store.Arm]*benchfmt.Output{store.Head: o.Head}
	if o.Base != nil {
		arms[store.Base] = o.Base
	}
	return a.record(ctx, run, arms, o.Machine, o.Err)
}

func (a *API) record(ctx context.Context, run store.Run, arms map[store.Arm]*benchfmt.Output, m store.Machine, runErr error) (*SubmitResponse, error) {
	head := arms[store.Head]
	if head == nil {
		head = arms[store.Base]
	}
	resp := &SubmitResponse{Metrics: head.Metrics(), Errors: head.Errors}
	if run.ID == 0 {
		if run.CommitTime.IsZero() {
			run.CommitTime = time.Now()
		}
		run.State = store.Running
		id, err := a.Store.AddRun(ctx, run)
		if err != nil {
			return nil, err
		}
		run.ID = id
	}
	resp.Run = run.ID
	for _, arm := range []store.Arm{store.Base, store.Head} {
		if out := arms[arm]; out != nil {
			if err := a.Store.PutMetrics(ctx, run.ID, arm, out.Benchmarks); err != nil {
				return nil, err
			}
		}
	}
	state, reason := store.Passed, ""
	switch {
	case runErr != nil:
		state, reason = store.Failed, fmt.Sprintf("%v (the %d metrics printed before are kept)", runErr, head.Metrics())
	case head.Metrics() == 0:
		state, reason = store.Failed, fmt.Sprintf("no benchmark results in %d lines of output", head.Lines)
	case len(head.Errors) > 0:
		reason = fmt.Sprintf("%d problems in the output, first: %v", len(head.Errors)+head.DroppedErrors, head.Errors[0])
	}
	if err := a.Store.Finish(ctx, run.ID, state, reason, m); err != nil {
		return nil, err
	}
	stored, err := a.Store.Run(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	if state == store.Passed {
		c, err := Compare(ctx, a.Store, stored, a.Target, a.Options)
		if err != nil {
			return nil, err
		}
		resp.Comparison = &c
		if a.OnJudged != nil {
			a.OnJudged(ctx, c)
		}
	}
	a.Logger.Info("bench results stored", "repo", run.Repo, "commit", run.Commit, "run", run.ID, "state", string(state),
		"metrics", resp.Metrics, "problems", len(head.Errors))
	return resp, nil
}

// RepoID reads a store repository name ("gitea/owner/name") as a forge repository.
func RepoID(repo string) (forge.RepoID, bool) {
	parts := strings.SplitN(repo, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return forge.RepoID{}, false
	}
	return forge.RepoID{Forge: parts[0], Owner: parts[1], Name: parts[2]}, true
}
