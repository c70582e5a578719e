package healthcheck

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

// Store keeps the runs and their results in SQLite.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

var storeSchema = []string{
	`CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
		message TEXT NOT NULL DEFAULT '', repository TEXT NOT NULL, commit_id TEXT NOT NULL, started INTEGER NOT NULL,
		finished INTEGER NOT NULL DEFAULT 0, switches TEXT NOT NULL, all_versions INTEGER NOT NULL DEFAULT 0,
		candidate TEXT NOT NULL DEFAULT '')`,
	`CREATE TABLE IF NOT EXISTS results (run INTEGER NOT NULL, package TEXT NOT NULL, switch TEXT NOT NULL,
		state TEXT NOT NULL, kind TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', lines TEXT NOT NULL DEFAULT '',
		maintainers TEXT NOT NULL DEFAULT '', revdeps INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
		started INTEGER NOT NULL DEFAULT 0, duration INTEGER NOT NULL DEFAULT 0, log_key TEXT NOT NULL DEFAULT '',
		job_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (run, switch, package))`,
	`CREATE INDEX IF NOT EXISTS results_state ON results (run, state)`,
}

// OpenStore opens (creating it if needed) the store's database at path.
func OpenStore(path string) (*Store, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)")
	if err != nil {
		return nil, fmt.Errorf("open health-check store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range storeSchema {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			return nil, fmt.Errorf("health-check store %s: schema: %w", path, err)
		}
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
	res, err := s.db.ExecContext(ctx, `INSERT INTO runs (kind, status, message, repository, commit_id, started, finished,
		switches, all_versions, candidate) VALUES (?,?,?,?,?,?,?,?,?,?)`,
		string(r.Kind), string(r.Status), r.Message, r.Repository, r.Commit, ms(r.Started), ms(r.Finished),
		string(sw), r.AllVersions, cand)
	if err != nil {
		return 0, fmt.Errorf("health-check store: create run: %w", err)
	}
	r.ID, err = res.LastInsertId()
	return r.ID, err
}

// SetRunStatus records where a run is; a finished status also sets its end time.
func (s *Store) SetRunStatus(ctx context.Context, id int64, status RunStatus, message string) error {
	var fin int64
	if status.Finished() {
		fin = ms(s.now())
	}
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET status=?, message=?, finished=? WHERE id=?`,
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
	rows, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs `+where, args...)
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
	rows, err := s.db.QueryContext(ctx, `SELECT switch, state, count(*) FROM results WHERE run=? GROUP BY switch, state`, r.ID)
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
	rs, err := s.runs(ctx, `WHERE id=?`, id)
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
	rs, err := s.runs(ctx, `WHERE kind=? AND status=? ORDER BY id DESC LIMIT 1`, string(Baseline), string(RunDone))
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}

// Current returns the runs not finished yet, oldest first.
func (s *Store) Current(ctx context.Context) ([]Run, error) {
	return s.runs(ctx, `WHERE status IN (?,?) ORDER BY id`, string(RunPlanning), string(RunRunning))
}

// Runs returns the newest runs first, at most limit (all when limit is 0); kind ""
// gives both kinds.
func (s *Store) Runs(ctx context.Context, kind RunKind, limit int) ([]Run, error) {
	q, args := `WHERE (?='' OR kind=?) ORDER BY id DESC`, []any{string(kind), string(kind)}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	return s.runs(ctx, q, args...)
}

// Previous returns the finished baseline run before run id, or nil.
func (s *Store) Previous(ctx context.Context, id int64) (*Run, error) {
	rs, err := s.runs(ctx, `WHERE kind=? AND status=? AND id<? ORDER BY id DESC LIMIT 1`,
		string(Baseline), string(RunDone), id)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}

// PutResults records results (new ones, or new states of planned ones) in one transaction.
func (s *Store) PutResults(ctx context.Context, rs []Result) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("health-check store: results: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO results (run, package, switch, state, kind, message, lines, maintainers,
		revdeps, attempts, started, duration, log_key, job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT DO UPDATE SET state=excluded.state, kind=excluded.kind, message=excluded.message,
		lines=excluded.lines, maintainers=excluded.maintainers, revdeps=excluded.revdeps, attempts=excluded.attempts,
		started=excluded.started, duration=excluded.duration, log_key=excluded.log_key, job_id=excluded.job_id`)
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
	return tx.Commit()
}

// SetOutcome records what became of a planned result: its state, kind, message,
// lines, attempts, times and log, keeping what planning recorded (maintainers,
// reverse dependencies).
func (s *Store) SetOutcome(ctx context.Context, r Result) error {
	res, err := s.db.ExecContext(ctx, `UPDATE results SET state=?, kind=?, message=?, lines=?, attempts=?, started=?,
		duration=?, log_key=?, job_id=? WHERE run=? AND switch=? AND package=?`,
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
	where, args := `WHERE run=?`, []any{run}
	if q.Switch != "" {
		where += ` AND switch=?`
		args = append(args, q.Switch)
	}
	if q.Package != "" {
		where += ` AND (package=? OR package LIKE ? ESCAPE '\')`
		args = append(args, q.Package, likeEscape(q.Package)+".%")
	}
	if len(q.States) > 0 {
		where += ` AND state IN (?` + strings.Repeat(",?", len(q.States)-1) + `)`
		for _, st := range q.States {
			args = append(args, string(st))
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT run, package, switch, state, kind, message, lines, maintainers, revdeps,
		attempts, started, duration, log_key, job_id FROM results `+where+` ORDER BY package, switch`, args...)
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

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
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
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM runs WHERE kind=? AND status IN (?,?,?) ORDER BY id DESC LIMIT -1 OFFSET ?`,
		string(Baseline), string(RunDone), string(RunFailed), string(RunCancelled), keep)
	if err != nil {
		return nil, fmt.Errorf("health-check store: prune: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		return nil, nil
	}
	oldestKept := ids[0] + 1
	cands, err := s.runs(ctx, `WHERE kind=? AND status IN (?,?,?)`, string(Candidate), string(RunDone), string(RunFailed), string(RunCancelled))
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		if c.Candidate != nil && c.Candidate.Baseline < oldestKept {
			ids = append(ids, c.ID)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM results WHERE run=?`, id); err != nil {
			return nil, fmt.Errorf("health-check store: prune run %d: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE id=?`, id); err != nil {
			return nil, fmt.Errorf("health-check store: prune run %d: %w", id, err)
		}
	}
	return ids, tx.Commit()
}
