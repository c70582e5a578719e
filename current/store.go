package current

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/internal/database"
)

// schema is the engine's tables. Releases before internal/database kept the version in
// schema_version. Migration 1 spells its integer columns BIGINT for PostgreSQL, which
// SQLite treats as the INTEGER it once said.
var schema = database.Schema{Name: "engine", Legacy: "schema_version", Migrations: []string{
	`CREATE TABLE results (
		id           {{id}},
		op           TEXT    NOT NULL,
		digest       TEXT    NOT NULL,
		key          TEXT    NOT NULL,
		label        TEXT    NOT NULL DEFAULT '',
		build        BIGINT  NOT NULL,
		input_digest TEXT    NOT NULL,
		input        {{blob}},
		state        TEXT    NOT NULL,
		level        BIGINT  NOT NULL DEFAULT 0,
		lane         TEXT    NOT NULL DEFAULT '',
		output       {{blob}},
		message      TEXT    NOT NULL DEFAULT '',
		failure_kind TEXT    NOT NULL DEFAULT '',
		attempts     BIGINT  NOT NULL DEFAULT 0,
		ready_at     BIGINT  NOT NULL,
		running_at   BIGINT  NOT NULL DEFAULT 0,
		finished_at  BIGINT  NOT NULL DEFAULT 0,
		expires_at   BIGINT  NOT NULL DEFAULT 0,
		rebuild      BIGINT  NOT NULL DEFAULT 0,
		log_size     BIGINT  NOT NULL DEFAULT 0,
		log_deleted  BIGINT  NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX results_key ON results(op, digest, build);
	CREATE INDEX results_state ON results(state);
	CREATE INDEX results_finished ON results(finished_at);`,
	`CREATE TABLE log_rules (
		id          {{id}},
		pattern     TEXT    NOT NULL,
		explanation TEXT    NOT NULL,
		created_at  BIGINT  NOT NULL
	);`,
	`ALTER TABLE results ADD COLUMN failing_lines TEXT NOT NULL DEFAULT '';`,
	// The logs of jobs when they are kept in the database (see dbLogs): each write is
	// a chunk at its byte offset in the job's log.
	`CREATE TABLE job_logs (
		job_id BIGINT NOT NULL,
		off    BIGINT NOT NULL,
		data   {{blob}} NOT NULL,
		PRIMARY KEY (job_id, off)
	);`,
}}

type store struct {
	db         *database.DB
	latestStmt *sql.Stmt
}

// openStore opens the engine's database at target (a SQLite file or a postgres:// URL).
func openStore(ctx context.Context, target string) (*store, error) {
	db, err := database.Open(ctx, target, database.MaxConns(1),
		database.SQLitePragma("cache_size", "-4096"), database.SQLitePragma("mmap_size", "1073741824"))
	if err != nil {
		return nil, fmt.Errorf("engine store: %w", err)
	}
	if db.Backend() == database.Postgres {
		db.SetMaxOpenConns(8)
	}
	s := &store{db: db}
	if db.Backend() == database.SQLite {
		if err := s.checkIntegrity(target); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := db.Migrate(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("engine store: %w", err)
	}
	s.latestStmt, err = db.PrepareContext(ctx, `SELECT `+rowCols+` FROM results WHERE op = $1 AND digest = $2 ORDER BY build DESC LIMIT 1`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("engine store %s: %w", db, err)
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
	// CROSS JOIN keeps the few wanted keys as the outer loop in SQLite.
	q := `SELECT ` + rowCols + ` FROM (SELECT digest AS d, MAX(build) AS b FROM results WHERE op = $1 AND digest IN (` +
		placeholders(2, len(digests)) + `) GROUP BY digest) AS latest CROSS JOIN results WHERE results.op = $1 AND results.digest = latest.d AND results.build = latest.b`
	args := make([]any, 0, len(digests)+1)
	args = append(args, op)
	for _, d := range digests {
		args = append(args, d)
	}
	rows, err := s.rows(q, args...)
	if err != nil {
		return nil, fmt.Errorf("read results of %s: %w", op, err)
	}
	return rows, nil
}

func (s *store) get(id int64) (*jobRow, error) {
	r, err := scanRow(s.db.QueryRow(`SELECT `+rowCols+` FROM results WHERE id = $1`, id))
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
		rows, err := s.db.Query(`SELECT id, key FROM results WHERE id IN (`+placeholders(1, len(chunk))+`)`, args...)
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
	return s.rows(`SELECT `+rowCols+` FROM results WHERE op = $1 AND digest = $2 ORDER BY build DESC LIMIT $3`, op, digest, limit)
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
	err := s.db.QueryRow(`INSERT INTO results (op, digest, key, label, build, input_digest, input, state, level, lane, ready_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
		r.Op, r.Digest, r.Key, r.Label, r.Build, r.InputDigest, r.Input, r.State, int(r.Level), string(r.Lane), r.ReadyAt).Scan(&r.ID)
	if err != nil {
		return fmt.Errorf("record job of %s: %w", r.Op, err)
	}
	return nil
}

func (s *store) setRunning(id int64, at int64, attempts int) error {
	_, err := s.db.Exec(`UPDATE results SET state = 'running', running_at = $1, attempts = $2 WHERE id = $3`, at, attempts, id)
	return err
}

func (s *store) setState(id int64, state string) error {
	_, err := s.db.Exec(`UPDATE results SET state = $1 WHERE id = $2`, state, id)
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
	_, err := s.db.Exec(`UPDATE results SET state = $1, output = $2, message = $3, failure_kind = $4, attempts = $5,
		finished_at = $6, expires_at = $7, rebuild = $8, log_size = $9, failing_lines = $10 WHERE id = $11`,
		r.State, r.Output, r.Message, string(r.FailureKind), r.Attempts, r.FinishedAt, r.ExpiresAt, boolInt(r.Rebuild), r.LogSize, lines, r.ID)
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
	res, err := s.db.Exec(`UPDATE results SET rebuild = 1 WHERE id = (SELECT id FROM results WHERE op = $1 AND digest = $2 ORDER BY build DESC LIMIT 1)`, op, digest)
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

func (q Query) sql(db *database.DB) (string, []any, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Op != "" {
		where = append(where, "op = "+arg(q.Op))
	}
	if q.KeyContains != "" {
		p := arg(q.KeyContains)
		where = append(where, "("+db.Position("key", p)+" > 0 OR "+db.Position("label", p)+" > 0)")
	}
	if len(q.States) > 0 {
		var ors []string
		for _, st := range q.States {
			switch st {
			case JobOK, JobFailed, JobInterrupted:
				ors = append(ors, "state = "+arg(string(st)))
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
			ors = append(ors, "failure_kind = "+arg(string(k)))
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	if !q.Since.IsZero() {
		where = append(where, "ready_at >= "+arg(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		where = append(where, "ready_at < "+arg(q.Until.UnixNano()))
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
	s += " ORDER BY id DESC LIMIT " + arg(limit) + " OFFSET " + arg(q.Offset)
	return s, args, nil
}

// placeholders lists n query parameters from $first: "$2, $3, $4".
func placeholders(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i))
	}
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
