package healthcheck

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kiln-ci/kiln/services/internal/servicedb"
)

// Store keeps the runs and their results in SQLite or PostgreSQL.
type Store struct {
	db  *servicedb.DB
	now func() time.Time
}

// storeSchema's tables are {p}runs and {p}results, {p} being the store's prefix. The
// first migration adopts the tables of files made before migrations.
var storeSchema = []string{
	`CREATE TABLE IF NOT EXISTS {p}runs (id {{id}}, kind TEXT NOT NULL, status TEXT NOT NULL,
		message TEXT NOT NULL DEFAULT '', repository TEXT NOT NULL, commit_id TEXT NOT NULL, started BIGINT NOT NULL,
		finished BIGINT NOT NULL DEFAULT 0, switches TEXT NOT NULL, all_versions BOOLEAN NOT NULL DEFAULT FALSE,
		candidate TEXT NOT NULL DEFAULT '');
	CREATE TABLE IF NOT EXISTS {p}results (run BIGINT NOT NULL, package {{key}} NOT NULL, switch {{key}} NOT NULL,
		state TEXT NOT NULL, kind TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', lines TEXT NOT NULL DEFAULT '',
		maintainers TEXT NOT NULL DEFAULT '', revdeps BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0,
		started BIGINT NOT NULL DEFAULT 0, duration BIGINT NOT NULL DEFAULT 0, log_key TEXT NOT NULL DEFAULT '',
		job_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (run, switch, package));
	CREATE INDEX IF NOT EXISTS {p}results_state ON {p}results (run, state)`,
}

// OpenStore opens (creating it if needed) the store in the SQLite file at path.
func OpenStore(path string) (*Store, error) {
	return OpenStoreAt(context.Background(), path, "")
}

// OpenStoreAt opens (creating and migrating it if needed) the store in the database at
// target, a SQLite file's path or a postgres:// URL, its tables' names starting with
// prefix so that it can share the database.
func OpenStoreAt(ctx context.Context, target, prefix string) (*Store, error) {
	db, err := servicedb.Open(ctx, target, prefix, "store", storeSchema)
	if err != nil {
		return nil, fmt.Errorf("open health-check store: %w", err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMs(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// CreateRun records a new run (its ID is set from the database) and returns its ID.
func (s *Store) CreateRun(ctx context.Context, r *Run) (int64, error) {
	sw, err := json.Marshal(r.Switches)
	if err != nil {
		return 0, err
	}
	cand := ""
	if r.Candidate != nil {
		b, err := json.Marshal(r.Candidate)
		if err != nil {
			return 0, err
		}
		cand = string(b)
	}
	if r.Status == "" {
		r.Status = RunPlanning
	}
	if r.Kind == "" {
		r.Kind = Baseline
	}
	if r.Started.IsZero() {
		r.Started = s.now().UTC()
	}
	err = s.db.QueryRowContext(ctx, s.db.Q(`INSERT INTO {p}runs (kind, status, message, repository, commit_id, started,
		finished, switches, all_versions, candidate) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id`),
		string(r.Kind), string(r.Status), r.Message, r.Repository, r.Commit, ms(r.Started), ms(r.Finished),
		string(sw), r.AllVersions, cand).Scan(&r.ID)
	if err != nil {
		return 0, fmt.Errorf("health-check store: create run: %w", err)
	}
	return r.ID, nil
}

// SetRunStatus records where a run is; a finished status also sets its end time.
func (s *Store) SetRunStatus(ctx context.Context, id int64, status RunStatus, message string) error {
	var fin int64
	if status.Finished() {
		fin = ms(s.now())
	}
	res, err := s.db.ExecContext(ctx, s.db.Q(`UPDATE {p}runs SET status=$1, message=$2, finished=$3 WHERE id=$4`),
		string(status), message, fin, id)
	if err != nil {
		return fmt.Errorf("health-check store: run %d: set status %s: %w", id, status, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("health-check store: run %d: %w", id, ErrNoRun)
	}
	return nil
}

// ErrNoRun is returned for a run the store does not have.
var ErrNoRun = errors.New("no such run")

const runColumns = `id, kind, status, message, repository, commit_id, started, finished, switches, all_versions, candidate`

func (s *Store) runs(ctx context.Context, where string, args ...any) ([]Run, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Q(`SELECT `+runColumns+` FROM {p}runs `+where), args...)
	if err != nil {
		return nil, fmt.Errorf("health-check store: runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		var r Run
		var kind, status, sw, cand string
		var started, finished int64
		if err := rows.Scan(&r.ID, &kind, &status, &r.Message, &r.Repository, &r.Commit, &started, &finished,
			&sw, &r.AllVersions, &cand); err != nil {
			return nil, err
		}
		r.Kind, r.Status = RunKind(kind), RunStatus(status)
		r.Started, r.Finished = fromMs(started), fromMs(finished)
		if err := json.Unmarshal([]byte(sw), &r.Switches); err != nil {
			return nil, fmt.Errorf("health-check store: run %d: switches: %w", r.ID, err)
		}
		if cand != "" {
			r.Candidate = new(CandidateInfo)
			if err := json.Unmarshal([]byte(cand), r.Candidate); err != nil {
				return nil, fmt.Errorf("health-check store: run %d: candidate: %w", r.ID, err)
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if err := s.count(ctx, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// count fills a run's counts and progress from its results.
func (s *Store) count(ctx context.Context, r *Run) error {
	rows, err := s.db.QueryContext(ctx, s.db.Q(`SELECT switch, state, count(*) FROM {p}results WHERE run=$1 GROUP BY switch, state`), r.ID)
	if err != nil {
		return fmt.Errorf("health-check store: run %d: counts: %w", r.ID, err)
	}
	defer rows.Close()
	r.Counts, r.BySwitch = Counts{}, map[string]Counts{}
	for rows.Next() {
		var sw, st string
		var n int
		if err := rows.Scan(&sw, &st, &n); err != nil {
			return err
		}
		r.Counts[State(st)] += n
		if r.BySwitch[sw] == nil {
			r.BySwitch[sw] = Counts{}
		}
		r.BySwitch[sw][State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return err
	}
	r.Progress = progress(r, s.now())
	return nil
}

// progress is done/total of a run's results and, while it runs, the end at the rate
// of its builds so far.
func progress(r *Run, now time.Time) Progress {
	p := Progress{Total: r.Counts.Total(), Done: r.Counts.Total() - r.Counts[Pending]}
	built := p.Done - r.Counts[NotAvailable]
	if r.Status == RunRunning && built > 0 && p.Done < p.Total {
		per := now.Sub(r.Started) / time.Duration(built)
		p.ETA = now.Add(per * time.Duration(p.Total-p.Done)).UTC().Truncate(time.Second)
	}
	return p
}

// Run returns one run, or ErrNoRun.
func (s *Store) Run(ctx context.Context, id int64) (*Run, error) {
	rs, err := s.runs(ctx, `WHERE id=$1`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("health-check store: run %d: %w", id, ErrNoRun)
	}
	return &rs[0], nil
}

// Latest returns the newest finished baseline run (status done), or nil when there is none.
func (s *Store) Latest(ctx context.Context) (*Run, error) {
	rs, err := s.runs(ctx, `WHERE kind=$1 AND status=$2 ORDER BY id DESC LIMIT 1`, string(Baseline), string(RunDone))
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}

// Current returns the runs not finished yet, oldest first.
func (s *Store) Current(ctx context.Context) ([]Run, error) {
	return s.runs(ctx, `WHERE status IN ($1,$2) ORDER BY id`, string(RunPlanning), string(RunRunning))
}

// Runs returns the newest runs first, at most limit (all when limit is 0); kind ""
// gives both kinds.
func (s *Store) Runs(ctx context.Context, kind RunKind, limit int) ([]Run, error) {
	var q string
	var args []any
	if kind != "" {
		q, args = `WHERE kind=$1 `, []any{string(kind)}
	}
	q += `ORDER BY id DESC`
	if limit > 0 {
		args = append(args, limit)
		q += ` LIMIT $` + strconv.Itoa(len(args))
	}
	return s.runs(ctx, q, args...)
}

// Previous returns the finished baseline run before run id, or nil.
func (s *Store) Previous(ctx context.Context, id int64) (*Run, error) {
	rs, err := s.runs(ctx, `WHERE kind=$1 AND status=$2 AND id<$3 ORDER BY id DESC LIMIT 1`,
		string(Baseline), string(RunDone), id)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}

// PutResults records results (new ones, or new states of planned ones) in one transaction.
func (s *Store) PutResults(ctx context.Context, rs []Result) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, s.db.Q(`INSERT INTO {p}results (run, package, switch, state, kind, message, lines,
			maintainers, revdeps, attempts, started, duration, log_key, job_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)
			ON CONFLICT (run, switch, package) DO UPDATE SET state=excluded.state, kind=excluded.kind, message=excluded.message,
			lines=excluded.lines, maintainers=excluded.maintainers, revdeps=excluded.revdeps, attempts=excluded.attempts,
			started=excluded.started, duration=excluded.duration, log_key=excluded.log_key, job_id=excluded.job_id`))
		if err != nil {
			return fmt.Errorf("health-check store: results: %w", err)
		}
		defer st.Close()
		for _, r := range rs {
			if _, err := st.ExecContext(ctx, r.Run, r.Package, r.Switch, string(r.State), string(r.Kind), r.Message,
				strings.Join(r.Lines, "\n"), strings.Join(r.Maintainers, "\n"), r.Revdeps, r.Attempts, ms(r.Started),
				r.Duration.Milliseconds(), r.Log.Key, r.Log.JobID); err != nil {
				return fmt.Errorf("health-check store: run %d: result %s on %s: %w", r.Run, r.Package, r.Switch, err)
			}
		}
		return nil
	})
}

// SetOutcome records what became of a planned result: its state, kind, message,
// lines, attempts, times and log, keeping what planning recorded (maintainers,
// reverse dependencies).
func (s *Store) SetOutcome(ctx context.Context, r Result) error {
	res, err := s.db.ExecContext(ctx, s.db.Q(`UPDATE {p}results SET state=$1, kind=$2, message=$3, lines=$4, attempts=$5,
		started=$6, duration=$7, log_key=$8, job_id=$9 WHERE run=$10 AND switch=$11 AND package=$12`),
		string(r.State), string(r.Kind), r.Message, strings.Join(r.Lines, "\n"), r.Attempts, ms(r.Started),
		r.Duration.Milliseconds(), r.Log.Key, r.Log.JobID, r.Run, r.Switch, r.Package)
	if err != nil {
		return fmt.Errorf("health-check store: run %d: result %s on %s: %w", r.Run, r.Package, r.Switch, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("health-check store: run %d: %s on %s was not planned", r.Run, r.Package, r.Switch)
	}
	return nil
}

// ResultQuery selects results of a run; zero fields select everything.
type ResultQuery struct {
	Switch  string
	Package string  // name.version, or a name for all its versions
	States  []State // any of these
}

// Results returns a run's results by package then switch.
func (s *Store) Results(ctx context.Context, run int64, q ResultQuery) ([]Result, error) {
	where, args := `WHERE run=$1`, []any{run}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Switch != "" {
		where += ` AND switch=` + arg(q.Switch)
	}
	if q.Package != "" {
		// the package itself, or every version of the name: a prefix compared by its bytes
		prefix := q.Package + "."
		where += ` AND (package=` + arg(q.Package) + ` OR substr(package, 1, ` + arg(utf8.RuneCountInString(prefix)) + `)=` + arg(prefix) + `)`
	}
	if len(q.States) > 0 {
		marks := make([]string, len(q.States))
		for i, st := range q.States {
			marks[i] = arg(string(st))
		}
		where += ` AND state IN (` + strings.Join(marks, ",") + `)`
	}
	rows, err := s.db.QueryContext(ctx, s.db.Q(`SELECT run, package, switch, state, kind, message, lines, maintainers, revdeps,
		attempts, started, duration, log_key, job_id FROM {p}results `+where+` ORDER BY package, switch`), args...)
	if err != nil {
		return nil, fmt.Errorf("health-check store: run %d: results: %w", run, err)
	}
	defer rows.Close()
	var out []Result
	for rows.Next() {
		var r Result
		var state, kind, lines, maint string
		var started, dur int64
		if err := rows.Scan(&r.Run, &r.Package, &r.Switch, &state, &kind, &r.Message, &lines, &maint, &r.Revdeps,
			&r.Attempts, &started, &dur, &r.Log.Key, &r.Log.JobID); err != nil {
			return nil, err
		}
		r.State, r.Kind = State(state), Kind(kind)
		r.Lines, r.Maintainers = splitLines(lines), splitLines(maint)
		r.Started, r.Duration = fromMs(started), time.Duration(dur)*time.Millisecond
		out = append(out, r)
	}
	return out, rows.Err()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Prune removes the oldest finished runs beyond the newest keep baseline runs (and
// candidate runs whose baseline is removed), with their results, and returns the IDs
// removed so their logs can be removed too.
func (s *Store) Prune(ctx context.Context, keep int) ([]int64, error) {
	if keep < 1 {
		return nil, fmt.Errorf("health-check store: prune: keep %d runs: at least one must be kept", keep)
	}
	rows, err := s.db.QueryContext(ctx, s.db.Q(`SELECT id FROM {p}runs WHERE kind=$1 AND status IN ($2,$3,$4) ORDER BY id DESC`),
		string(Baseline), string(RunDone), string(RunFailed), string(RunCancelled))
	if err != nil {
		return nil, fmt.Errorf("health-check store: prune: %w", err)
	}
	var ids []int64
	for n := 0; rows.Next(); n++ {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("health-check store: prune: %w", err)
		}
		if n >= keep {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("health-check store: prune: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	oldestKept := ids[0] + 1
	cands, err := s.runs(ctx, `WHERE kind=$1 AND status IN ($2,$3,$4)`, string(Candidate), string(RunDone), string(RunFailed), string(RunCancelled))
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		if c.Candidate != nil && c.Candidate.Baseline < oldestKept {
			ids = append(ids, c.ID)
		}
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, s.db.Q(`DELETE FROM {p}results WHERE run=$1`), id); err != nil {
				return fmt.Errorf("health-check store: prune run %d: %w", id, err)
			}
			if _, err := tx.ExecContext(ctx, s.db.Q(`DELETE FROM {p}runs WHERE id=$1`), id); err != nil {
				return fmt.Errorf("health-check store: prune run %d: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}
