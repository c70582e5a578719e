// Package store keeps benchmark runs and their metrics, in SQLite by default or in
// PostgreSQL when given a postgres:// URL. Both run the same migrations and the same
// queries (the SQL differs only in the type of the generated run id).
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
)

// Store is the benchmark database.
type Store struct {
	db *database.DB
}

// Open opens (creating and migrating as needed) the database at target: a postgres://
// or postgresql:// URL, or else the path of a SQLite file.
func Open(ctx context.Context, target string) (*Store, error) {
	db, err := database.Open(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("bench store: %w", err)
	}
	if err := db.Migrate(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("bench store: %w", err)
	}
	return &Store{db: db}, nil
}

// Backend is "sqlite" or "postgres".
func (s *Store) Backend() string { return string(s.db.Backend()) }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// schema is the store's tables; releases before internal/database kept the version in
// bench_migrations.
var schema = database.Schema{Name: "bench", Legacy: "bench_migrations", Migrations: []string{
	`CREATE TABLE runs (
		id {{id}},
		repo TEXT NOT NULL,
		branch TEXT NOT NULL DEFAULT '',
		pr BIGINT NOT NULL DEFAULT 0,
		commit_hash TEXT NOT NULL,
		base_hash TEXT NOT NULL DEFAULT '',
		commit_time BIGINT NOT NULL DEFAULT 0,
		env TEXT NOT NULL DEFAULT '',
		state TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		created BIGINT NOT NULL,
		finished BIGINT NOT NULL DEFAULT 0,
		machine TEXT NOT NULL DEFAULT '{}',
		job TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX runs_repo_branch ON runs (repo, branch, env, commit_time);
	CREATE INDEX runs_repo_pr ON runs (repo, pr);
	CREATE INDEX runs_commit ON runs (repo, commit_hash);
	CREATE TABLE metrics (
		run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
		arm TEXT NOT NULL DEFAULT '',
		benchmark TEXT NOT NULL,
		test TEXT NOT NULL,
		name TEXT NOT NULL,
		units TEXT NOT NULL DEFAULT '',
		trend TEXT NOT NULL DEFAULT '',
		kind TEXT NOT NULL,
		central DOUBLE PRECISION NOT NULL,
		lo DOUBLE PRECISION NOT NULL,
		hi DOUBLE PRECISION NOT NULL,
		samples TEXT NOT NULL,
		lines TEXT NOT NULL DEFAULT '[]',
		PRIMARY KEY (run_id, arm, benchmark, test, name)
	);
	CREATE INDEX metrics_name ON metrics (benchmark, test, name);
	CREATE TABLE tokens (
		hash TEXT PRIMARY KEY,
		repo TEXT NOT NULL,
		name TEXT NOT NULL,
		created BIGINT NOT NULL
	);`,
	`ALTER TABLE runs ADD COLUMN log_spans TEXT NOT NULL DEFAULT '[]'`,
}}

// State is where a run is.
type State string

// The states of a run.
const (
	Queued    State = "queued"
	Running   State = "running"
	Passed    State = "passed"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Finished reports whether a run in state s is over.
func (s State) Finished() bool { return s == Passed || s == Failed || s == Cancelled }

// Machine is the state of the machine a run ran on.
type Machine struct {
	CPU      string `json:"cpu,omitempty"`
	Governor string `json:"governor,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	CPUs     string `json:"cpus,omitempty"` // the cpuset of the benchmark slot
	Worker   string `json:"worker,omitempty"`
	// Counters says whether a performance counter (instructions retired where the CPU
	// exposes them) was read around each run, its counts stored as the metric
	// kiln/counters/EVENT; CountersNote says which, or why none was.
	Counters     bool   `json:"counters,omitempty"`
	CountersNote string `json:"counters_note,omitempty"`
}

// Run is one benchmark run of a commit in an environment.
type Run struct {
	ID     int64  `json:"id"`
	Repo   string `json:"repo"`
	Branch string `json:"branch,omitempty"`
	// PR is the pull request's number, 0 for a branch run.
	PR int64 `json:"pr,omitempty"`
	// Commit is the commit benchmarked; Base is the PR's base commit, run interleaved
	// with it in the same job (its metrics have the arm "base").
	Commit     string    `json:"commit"`
	Base       string    `json:"base,omitempty"`
	CommitTime time.Time `json:"commit_time"`
	Env        string    `json:"env,omitempty"`
	State      State     `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Created    time.Time `json:"created"`
	Finished   time.Time `json:"finished,omitzero"`
	Machine    Machine   `json:"machine"`
	Job        string    `json:"job,omitempty"`
	// Log places the arms' output in the job's log (empty when not known).
	Log []LogSpan `json:"log,omitempty"`
}

// LogSpan places a stretch of an arm's output in its run's job log: the arm's output
// lines from Line on were printed on the job log's lines from LogLine on, up to the
// arm's next span.
type LogSpan struct {
	Arm     Arm `json:"arm,omitempty"`
	Line    int `json:"line"`
	LogLine int `json:"log_line"`
}

// LogLine is the line of the job's log that printed line (1-based) of arm's output;
// 0 when the run does not say.
func (r Run) LogLine(arm Arm, line int) int {
	at := 0
	for _, s := range r.Log {
		if s.Arm == arm && s.Line <= line {
			at = s.LogLine + line - s.Line
		}
	}
	return at
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// AddRun records a new run and returns its id.
func (s *Store) AddRun(ctx context.Context, r Run) (int64, error) {
	if r.Repo == "" || r.Commit == "" {
		return 0, errors.New("add run: a run needs a repository and a commit")
	}
	if r.State == "" {
		r.State = Queued
	}
	if r.Created.IsZero() {
		r.Created = time.Now()
	}
	machine, _ := json.Marshal(r.Machine)
	spans, _ := json.Marshal(r.Log)
	if r.Log == nil {
		spans = []byte("[]")
	}
	var id int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO runs
		(repo, branch, pr, commit_hash, base_hash, commit_time, env, state, reason, created, finished, machine, job, log_spans)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id`,
		r.Repo, r.Branch, r.PR, r.Commit, r.Base, ms(r.CommitTime), r.Env, string(r.State), r.Reason,
		ms(r.Created), ms(r.Finished), string(machine), r.Job, string(spans)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("add run of %s at %s: %w", r.Repo, r.Commit, err)
	}
	return id, nil
}

// Finish sets a run's final state, the reason for it and the machine it ran on.
func (s *Store) Finish(ctx context.Context, id int64, state State, reason string, m Machine) error {
	machine, _ := json.Marshal(m)
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET state = $1, reason = $2, machine = $3, finished = $4 WHERE id = $5`,
		string(state), reason, string(machine), time.Now().UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("finish run %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("finish run %d: %w", id, ErrNotFound)
	}
	return nil
}

// SetState moves a run to state (a re-run back to queued, a start to running).
func (s *Store) SetState(ctx context.Context, id int64, state State) error {
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET state = $1, reason = '', finished = 0 WHERE id = $2`, string(state), id)
	if err != nil {
		return fmt.Errorf("set run %d %s: %w", id, state, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set run %d %s: %w", id, state, ErrNotFound)
	}
	return nil
}

// ErrNotFound is returned for a run or token that does not exist.
var ErrNotFound = errors.New("not found")

const runColumns = `id, repo, branch, pr, commit_hash, base_hash, commit_time, env, state, reason, created, finished, machine, job, log_spans`

func scanRun(sc interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var commitTime, created, finished int64
	var state, machine, spans string
	err := sc.Scan(&r.ID, &r.Repo, &r.Branch, &r.PR, &r.Commit, &r.Base, &commitTime, &r.Env, &state, &r.Reason,
		&created, &finished, &machine, &r.Job, &spans)
	if err != nil {
		return r, err
	}
	r.State = State(state)
	r.CommitTime, r.Created, r.Finished = fromMS(commitTime), fromMS(created), fromMS(finished)
	if err := json.Unmarshal([]byte(machine), &r.Machine); err != nil {
		return r, fmt.Errorf("run %d: machine: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(spans), &r.Log); err != nil {
		return r, fmt.Errorf("run %d: log spans: %w", r.ID, err)
	}
	return r, nil
}

// Run returns the run id.
func (s *Store) Run(ctx context.Context, id int64) (Run, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("run %d: %w", id, ErrNotFound)
	}
	return r, err
}

// Filter selects runs. Zero fields select everything; PR -1 selects branch runs only.
type Filter struct {
	Repo, Branch, Env string
	PR                int64
	State             State
	// From and To bound the commit time (inclusive; zero is unbounded).
	From, To time.Time
	// Limit is the number of runs at most, the newest (default 1000).
	Limit int
}

// Runs returns the runs f selects, oldest commit first.
func (s *Store) Runs(ctx context.Context, f Filter) ([]Run, error) {
	where, args := f.where("")
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	q := fmt.Sprintf(`SELECT %s FROM (SELECT * FROM runs WHERE %s ORDER BY commit_time DESC, id DESC LIMIT $%d) AS r
		ORDER BY commit_time, id`, runColumns, where, len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("runs of %s: %w", f.Repo, err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// where is f's condition on the runs table (aliased p when given) and its arguments.
func (f Filter) where(p string) (string, []any) {
	conds := []string{"1 = 1"}
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, p, len(args)))
	}
	if f.Repo != "" {
		add("%srepo = $%d", f.Repo)
	}
	if f.Branch != "" {
		add("%sbranch = $%d", f.Branch)
	}
	if f.Env != "" {
		add("%senv = $%d", f.Env)
	}
	switch {
	case f.PR > 0:
		add("%spr = $%d", f.PR)
	case f.PR < 0:
		add("%spr = $%d", 0)
	}
	if f.State != "" {
		add("%sstate = $%d", string(f.State))
	}
	if !f.From.IsZero() {
		add("%scommit_time >= $%d", ms(f.From))
	}
	if !f.To.IsZero() {
		add("%scommit_time <= $%d", ms(f.To))
	}
	return strings.Join(conds, " AND "), args
}

// Arm names whose samples a metric row holds: the run's commit ("") or, in an
// interleaved run, the base commit ("base").
type Arm string

// The arms of a run.
const (
	Head Arm = ""
	Base Arm = "base"
)

// PutMetrics stores the metrics of run id's arm, replacing what that arm had.
func (s *Store) PutMetrics(ctx context.Context, id int64, arm Arm, benches []benchfmt.Benchmark) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM metrics WHERE run_id = $1 AND arm = $2`, id, string(arm)); err != nil {
			return fmt.Errorf("metrics of run %d: %w", id, err)
		}
		for _, b := range benches {
			for _, r := range b.Results {
				for _, m := range r.Metrics {
					samples, _ := json.Marshal(m.Value)
					lines, _ := json.Marshal(m.Lines)
					lo, hi := m.Value.Band()
					_, err := tx.ExecContext(ctx, `INSERT INTO metrics
						(run_id, arm, benchmark, test, name, units, trend, kind, central, lo, hi, samples, lines)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
						id, string(arm), b.Name, r.Test, m.Name, m.Units, string(m.Trend), string(m.Value.Kind),
						m.Value.Central(), lo, hi, string(samples), string(lines))
					if err != nil {
						return fmt.Errorf("metric %s/%s/%s of run %d: %w", b.Name, r.Test, m.Name, id, err)
					}
				}
			}
		}
		return nil
	})
}

// Key names a metric: its benchmark, test and name.
type Key struct {
	Benchmark string `json:"benchmark"`
	Test      string `json:"test"`
	Name      string `json:"name"`
}

func (k Key) String() string {
	return strings.TrimLeft(strings.Join([]string{k.Benchmark, k.Test, k.Name}, "/"), "/")
}

// Point is one run's value of a metric.
type Point struct {
	Key
	RunID      int64                `json:"run"`
	Arm        Arm                  `json:"arm,omitempty"`
	Commit     string               `json:"commit"`
	CommitTime time.Time            `json:"commit_time"`
	Units      string               `json:"units,omitempty"`
	Trend      benchfmt.Trend       `json:"trend,omitempty"`
	Value      benchfmt.Value       `json:"value"`
	Central    float64              `json:"central"`
	Lo         float64              `json:"lo"`
	Hi         float64              `json:"hi"`
	Lines      []benchfmt.LineRange `json:"lines,omitempty"`
	// Job is the engine job of the run; LogLines are Lines in that job's log (none when
	// the run does not place its output there).
	Job      string               `json:"job,omitempty"`
	LogLines []benchfmt.LineRange `json:"log_lines,omitempty"`
}

// Series returns the points of the runs f selects (passed runs only when f.State is
// empty), oldest commit first; keys, when given, restricts the metrics.
func (s *Store) Series(ctx context.Context, f Filter, keys ...Key) ([]Point, error) {
	if f.State == "" {
		f.State = Passed
	}
	where, args := f.where("")
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	q := fmt.Sprintf(`SELECT `+pointColumns+`
		FROM metrics m JOIN runs r ON r.id = m.run_id
		WHERE m.run_id IN (SELECT id FROM (SELECT id FROM runs WHERE %s ORDER BY commit_time DESC, id DESC LIMIT $%d) AS recent)`,
		where, len(args))
	if len(keys) > 0 {
		var or []string
		for _, k := range keys {
			args = append(args, k.Benchmark, k.Test, k.Name)
			n := len(args)
			or = append(or, fmt.Sprintf("(m.benchmark = $%d AND m.test = $%d AND m.name = $%d)", n-2, n-1, n))
		}
		q += " AND (" + strings.Join(or, " OR ") + ")"
	}
	q += " ORDER BY r.commit_time, r.id, m.benchmark, m.test, m.name, m.arm"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("series of %s: %w", f.Repo, err)
	}
	return scanPoints(rows)
}

const pointColumns = `m.benchmark, m.test, m.name, m.run_id, m.arm, r.commit_hash, r.commit_time, m.units, m.trend,
		m.samples, m.central, m.lo, m.hi, m.lines, r.job, r.log_spans`

// RunPoints returns the metrics of run id, both arms.
func (s *Store) RunPoints(ctx context.Context, id int64) ([]Point, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+pointColumns+` FROM metrics m JOIN runs r ON r.id = m.run_id
		WHERE m.run_id = $1 ORDER BY m.benchmark, m.test, m.name, m.arm`, id)
	if err != nil {
		return nil, fmt.Errorf("metrics of run %d: %w", id, err)
	}
	return scanPoints(rows)
}

func scanPoints(rows *sql.Rows) ([]Point, error) {
	defer rows.Close()
	var out []Point
	for rows.Next() {
		var p Point
		var arm, trend, value, lines, spans string
		var t int64
		if err := rows.Scan(&p.Benchmark, &p.Test, &p.Name, &p.RunID, &arm, &p.Commit, &t, &p.Units, &trend,
			&value, &p.Central, &p.Lo, &p.Hi, &lines, &p.Job, &spans); err != nil {
			return nil, err
		}
		p.Arm, p.Trend, p.CommitTime = Arm(arm), benchfmt.Trend(trend), fromMS(t)
		if err := json.Unmarshal([]byte(value), &p.Value); err != nil {
			return nil, fmt.Errorf("run %d metric %s: %w", p.RunID, p.Key, err)
		}
		if err := json.Unmarshal([]byte(lines), &p.Lines); err != nil {
			return nil, fmt.Errorf("run %d metric %s lines: %w", p.RunID, p.Key, err)
		}
		var run Run
		if err := json.Unmarshal([]byte(spans), &run.Log); err != nil {
			return nil, fmt.Errorf("run %d: log spans: %w", p.RunID, err)
		}
		for _, l := range p.Lines {
			if first := run.LogLine(p.Arm, l.First); first > 0 {
				p.LogLines = append(p.LogLines, benchfmt.LineRange{First: first, Last: run.LogLine(p.Arm, l.Last)})
			}
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Keys returns the metrics the runs f selects have, sorted.
func (s *Store) Keys(ctx context.Context, f Filter) ([]Key, error) {
	where, args := f.where("r.")
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT m.benchmark, m.test, m.name FROM metrics m JOIN runs r ON r.id = m.run_id
		WHERE `+where+` ORDER BY m.benchmark, m.test, m.name`, args...)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", f.Repo, err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		var k Key
		if err := rows.Scan(&k.Benchmark, &k.Test, &k.Name); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// AddToken makes a new submit token for repo and returns it; only its hash is kept.
func (s *Store) AddToken(ctx context.Context, repo, name string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := "kb_" + hex.EncodeToString(b)
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (hash, repo, name, created) VALUES ($1, $2, $3, $4)`,
		hashToken(token), repo, name, time.Now().UnixMilli())
	if err != nil {
		return "", fmt.Errorf("add token %q for %s: %w", name, repo, err)
	}
	return token, nil
}

func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// CheckToken reports whether token is a submit token of repo.
func (s *Store) CheckToken(ctx context.Context, repo, token string) (bool, error) {
	var have string
	err := s.db.QueryRowContext(ctx, `SELECT repo FROM tokens WHERE hash = $1`, hashToken(token)).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check token for %s: %w", repo, err)
	}
	return subtle.ConstantTimeCompare([]byte(have), []byte(repo)) == 1, nil
}

// RepoRuns is a repository and its number of runs.
type RepoRuns struct {
	Repo string `json:"repo"`
	Runs int    `json:"runs"`
}

// Repos lists the repositories with runs, by name.
func (s *Store) Repos(ctx context.Context) ([]RepoRuns, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT repo, COUNT(*) FROM runs GROUP BY repo ORDER BY repo`)
	if err != nil {
		return nil, fmt.Errorf("repositories: %w", err)
	}
	defer rows.Close()
	var out []RepoRuns
	for rows.Next() {
		var r RepoRuns
		if err := rows.Scan(&r.Repo, &r.Runs); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
