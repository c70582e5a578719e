package current

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver
)

// migrations are applied in order; the database records how many ran. Never edit a
// released migration: append a new one.
var migrations = []string{
	`CREATE TABLE results (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		op           TEXT    NOT NULL,
		digest       TEXT    NOT NULL,
		key          TEXT    NOT NULL,
		label        TEXT    NOT NULL DEFAULT '',
		build        INTEGER NOT NULL,
		input_digest TEXT    NOT NULL,
		input        BLOB,
		state        TEXT    NOT NULL,
		level        INTEGER NOT NULL DEFAULT 0,
		lane         TEXT    NOT NULL DEFAULT '',
		output       BLOB,
		message      TEXT    NOT NULL DEFAULT '',
		failure_kind TEXT    NOT NULL DEFAULT '',
		attempts     INTEGER NOT NULL DEFAULT 0,
		ready_at     INTEGER NOT NULL,
		running_at   INTEGER NOT NULL DEFAULT 0,
		finished_at  INTEGER NOT NULL DEFAULT 0,
		expires_at   INTEGER NOT NULL DEFAULT 0,
		rebuild      INTEGER NOT NULL DEFAULT 0,
		log_size     INTEGER NOT NULL DEFAULT 0,
		log_deleted  INTEGER NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX results_key ON results(op, digest, build);
	CREATE INDEX results_state ON results(state);
	CREATE INDEX results_finished ON results(finished_at);`,
	`CREATE TABLE log_rules (
		id          INTEGER PRIMARY KEY AUTOINCREMENT,
		pattern     TEXT    NOT NULL,
		explanation TEXT    NOT NULL,
		created_at  INTEGER NOT NULL
	);`,
	`ALTER TABLE results ADD COLUMN failing_lines TEXT NOT NULL DEFAULT '';`,
}

type store struct {
	db         *sql.DB
	latestStmt *sql.Stmt
}

func openStore(path string) (*store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=cache_size(-4096)&_pragma=mmap_size(1073741824)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &store{db: db}
	if err := s.checkIntegrity(path); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s.latestStmt, err = db.Prepare(`SELECT ` + rowCols + ` FROM results WHERE op = ? AND digest = ? ORDER BY build DESC LIMIT 1`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	return s, nil
}

// checkIntegrity runs SQLite's quick_check, so that a damaged file is named at start-up
// instead of failing queries later.
func (s *store) checkIntegrity(path string) error {
	damaged := func(what string) error {
		return fmt.Errorf("database %s is damaged (%s); restore it from a backup, or recover what is readable with `sqlite3 %s .recover | sqlite3 NEW.db` and put NEW.db in its place",
			path, what, path)
	}
	rows, err := s.db.Query(`PRAGMA quick_check(5)`)
	if err != nil {
		return damaged(err.Error())
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return damaged(err.Error())
		}
		if line != "ok" {
			problems = append(problems, strings.Join(strings.Fields(line), " "))
		}
	}
	if err := rows.Err(); err != nil {
		return damaged(err.Error())
	}
	if len(problems) > 0 {
		return damaged("quick_check: " + strings.Join(problems, "; "))
	}
	return nil
}

func (s *store) close() error {
	s.latestStmt.Close()
	return s.db.Close()
}

func (s *store) migrate() error {
	if _, err := s.db.Exec(`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema version table: %w", err)
	}
	var v int
	err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := s.db.Exec(`INSERT INTO schema_version(version) VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this program knows (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(`UPDATE schema_version SET version = ?`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

// jobRow is one build of one key of one operation.
type jobRow struct {
	ID          int64
	Op          string
	Digest      string
	Key         string
	Label       string
	Build       int
	InputDigest string
	Input       []byte
	State       string // ready, running, interrupted, ok, failed
	Level       Level
	Lane        Lane
	Output      []byte
	Message     string
	FailureKind FailureKind
	// FailingLines are the log lines that explain a failure (see WithLines).
	FailingLines []string
	Attempts     int
	ReadyAt      int64
	RunningAt    int64
	FinishedAt   int64
	ExpiresAt    int64
	Rebuild      bool
	LogSize      int64
	LogDeleted   bool
}

const rowCols = `id, op, digest, key, label, build, input_digest, input, state, level, lane, output, message,
	failure_kind, attempts, ready_at, running_at, finished_at, expires_at, rebuild, log_size, log_deleted, failing_lines`

type scanner interface{ Scan(...any) error }

func scanRow(sc scanner) (*jobRow, error) {
	r := &jobRow{}
	var lane, kind, lines string
	err := sc.Scan(&r.ID, &r.Op, &r.Digest, &r.Key, &r.Label, &r.Build, &r.InputDigest, &r.Input, &r.State,
		&r.Level, &lane, &r.Output, &r.Message, &kind, &r.Attempts, &r.ReadyAt, &r.RunningAt, &r.FinishedAt,
		&r.ExpiresAt, &r.Rebuild, &r.LogSize, &r.LogDeleted, &lines)
	r.Lane, r.FailureKind = Lane(lane), FailureKind(kind)
	if err == nil && lines != "" {
		// A damaged list only loses the explanation, never the result.
		_ = json.Unmarshal([]byte(lines), &r.FailingLines)
	}
	return r, err
}

func (r *jobRow) finished() bool { return r.State == "ok" || r.State == "failed" }

func (s *store) latest(op, digest string) (*jobRow, error) {
	r, err := scanRow(s.latestStmt.QueryRow(op, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read result of %s: %w", op, err)
	}
	return r, nil
}

// latestMany returns the latest row of each of the given keys of op that has one.
func (s *store) latestMany(op string, digests []string) ([]*jobRow, error) {
	// CROSS JOIN keeps the few wanted keys as the outer loop.
	q := `SELECT ` + rowCols + ` FROM (SELECT digest AS d, MAX(build) AS b FROM results WHERE op = ? AND digest IN (?` +
		strings.Repeat(", ?", len(digests)-1) + `) GROUP BY digest) AS latest CROSS JOIN results ON results.op = ? AND results.digest = latest.d AND results.build = latest.b`
	args := make([]any, 0, len(digests)+2)
	args = append(args, op)
	for _, d := range digests {
		args = append(args, d)
	}
	args = append(args, op)
	rows, err := s.rows(q, args...)
	if err != nil {
		return nil, fmt.Errorf("read results of %s: %w", op, err)
	}
	return rows, nil
}

func (s *store) get(id int64) (*jobRow, error) {
	r, err := scanRow(s.db.QueryRow(`SELECT `+rowCols+` FROM results WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("job", fmt.Sprint(id))
	}
	if err != nil {
		return nil, fmt.Errorf("read job %d: %w", id, err)
	}
	return r, nil
}

// keys reads the keys of the jobs ids.
func (s *store) keys(ids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(ids))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 400)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.db.Query(`SELECT id, key FROM results WHERE id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read job keys: %w", err)
		}
		for rows.Next() {
			var id int64
			var key string
			if err := rows.Scan(&id, &key); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read job keys: %w", err)
			}
			out[id] = key
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read job keys: %w", err)
		}
	}
	return out, nil
}

func (s *store) history(op, digest string, limit int) ([]*jobRow, error) {
	return s.rows(`SELECT `+rowCols+` FROM results WHERE op = ? AND digest = ? ORDER BY build DESC LIMIT ?`, op, digest, limit)
}

func (s *store) rows(q string, args ...any) ([]*jobRow, error) {
	rs, err := s.db.Query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("query results: %w", err)
	}
	defer rs.Close()
	var out []*jobRow
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			return nil, fmt.Errorf("read results: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

func (s *store) insert(r *jobRow) error {
	res, err := s.db.Exec(`INSERT INTO results (op, digest, key, label, build, input_digest, input, state, level, lane, ready_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Op, r.Digest, r.Key, r.Label, r.Build, r.InputDigest, r.Input, r.State, int(r.Level), string(r.Lane), r.ReadyAt)
	if err != nil {
		return fmt.Errorf("record job of %s: %w", r.Op, err)
	}
	r.ID, err = res.LastInsertId()
	return err
}

func (s *store) setRunning(id int64, at int64, attempts int) error {
	_, err := s.db.Exec(`UPDATE results SET state = 'running', running_at = ?, attempts = ? WHERE id = ?`, at, attempts, id)
	return err
}

func (s *store) setState(id int64, state string) error {
	_, err := s.db.Exec(`UPDATE results SET state = ? WHERE id = ?`, state, id)
	return err
}

func (s *store) finish(r *jobRow) error {
	var lines string
	if len(r.FailingLines) > 0 {
		b, err := json.Marshal(r.FailingLines)
		if err != nil {
			return fmt.Errorf("record result of job %d: %w", r.ID, err)
		}
		lines = string(b)
	}
	_, err := s.db.Exec(`UPDATE results SET state = ?, output = ?, message = ?, failure_kind = ?, attempts = ?,
		finished_at = ?, expires_at = ?, rebuild = ?, log_size = ?, failing_lines = ? WHERE id = ?`,
		r.State, r.Output, r.Message, string(r.FailureKind), r.Attempts, r.FinishedAt, r.ExpiresAt, r.Rebuild, r.LogSize, lines, r.ID)
	if err != nil {
		return fmt.Errorf("record result of job %d: %w", r.ID, err)
	}
	return nil
}

// markInterrupted records jobs left unfinished by the last process as interrupted.
func (s *store) markInterrupted() (int64, error) {
	res, err := s.db.Exec(`UPDATE results SET state = 'interrupted' WHERE state IN ('ready', 'running')`)
	if err != nil {
		return 0, fmt.Errorf("mark interrupted jobs: %w", err)
	}
	return res.RowsAffected()
}

func (s *store) setRebuild(op, digest string) (int64, error) {
	res, err := s.db.Exec(`UPDATE results SET rebuild = 1 WHERE id = (SELECT id FROM results WHERE op = ? AND digest = ? ORDER BY build DESC LIMIT 1)`, op, digest)
	if err != nil {
		return 0, fmt.Errorf("request rebuild: %w", err)
	}
	return res.RowsAffected()
}

// Query selects cached results.
type Query struct {
	Op          string        `json:"op,omitempty"`           // exact operation name
	KeyContains string        `json:"key_contains,omitempty"` // substring of the key or label
	States      []JobState    `json:"states,omitempty"`       // any of these states
	Kinds       []FailureKind `json:"failure_kinds,omitempty"`
	Since       time.Time     `json:"since,omitzero"`        // ready at or after
	Until       time.Time     `json:"until,omitzero"`        // ready before
	LatestOnly  bool          `json:"latest_only,omitempty"` // only the latest build of each key
	Limit       int           `json:"limit,omitempty"`       // default 100, at most 10000
	Offset      int           `json:"offset,omitempty"`
}

func (q Query) sql() (string, []any, error) {
	var where []string
	var args []any
	if q.Op != "" {
		where = append(where, "op = ?")
		args = append(args, q.Op)
	}
	if q.KeyContains != "" {
		where = append(where, "(instr(key, ?) > 0 OR instr(label, ?) > 0)")
		args = append(args, q.KeyContains, q.KeyContains)
	}
	if len(q.States) > 0 {
		var ors []string
		for _, st := range q.States {
			switch st {
			case JobOK, JobFailed, JobInterrupted:
				ors = append(ors, "state = ?")
				args = append(args, string(st))
			case JobReady, JobWaiting, JobRunning:
				ors = append(ors, "state IN ('ready', 'running')")
			default:
				return "", nil, invalid("query: unknown state %q", st)
			}
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	if len(q.Kinds) > 0 {
		var ors []string
		for _, k := range q.Kinds {
			switch k {
			case FailWork, FailTimeout, FailCancelled, FailWorkerLost, FailDiskFull, FailNetwork, FailInterrupted:
			default:
				return "", nil, invalid("query: unknown failure kind %q", k)
			}
			ors = append(ors, "failure_kind = ?")
			args = append(args, string(k))
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	if !q.Since.IsZero() {
		where = append(where, "ready_at >= ?")
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where = append(where, "ready_at < ?")
		args = append(args, q.Until.UnixNano())
	}
	if q.LatestOnly {
		where = append(where, "build = (SELECT MAX(r2.build) FROM results r2 WHERE r2.op = results.op AND r2.digest = results.digest)")
	}
	if q.Limit < 0 || q.Offset < 0 {
		return "", nil, invalid("query: negative limit or offset")
	}
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	if limit > 10000 {
		limit = 10000
	}
	s := `SELECT ` + rowCols + ` FROM results`
	if len(where) > 0 {
		s += " WHERE " + strings.Join(where, " AND ")
	}
	s += " ORDER BY id DESC LIMIT ? OFFSET ?"
	args = append(args, limit, q.Offset)
	return s, args, nil
}
