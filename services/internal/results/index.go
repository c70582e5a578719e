// Package results is what services show of their work: an index of the refs, commits
// and variants (jobs) a service built, in SQLite, and the web pages over it (a page per
// forge, owner, repository, commit, variant and ref history, each with its JSON twin
// under /api/, and badges), linking to the console's job pages for logs and actions.
package results

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite"

	"github.com/kiln-ci/kiln/forge"
)

// Index records what a service did, for the web UI: the refs of each repository and
// their history, each commit's status and each variant's job.
type Index struct {
	db *sql.DB
}

// AnalysisVariant names the analysis of a commit in its status until the analysis
// has listed the variants to build.
const AnalysisVariant = "(analysis)"

// VariantRecord is one variant of one commit.
type VariantRecord struct {
	Repo    forge.RepoID `json:"-"`
	Commit  string       `json:"commit"`
	Name    string       `json:"name"`
	JobID   string       `json:"job_id,omitempty"`
	State   forge.State  `json:"state"`
	Message string       `json:"message,omitempty"`
	// Lines are the log lines that explain a failure.
	Lines        []string  `json:"failing_lines,omitempty"`
	Experimental bool      `json:"experimental,omitempty"`
	Started      time.Time `json:"started,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
}

// CommitInfo is what git says of a commit: its message, author and date.
type CommitInfo struct {
	Message  string    `json:"message,omitempty"`
	Author   string    `json:"author,omitempty"`
	Authored time.Time `json:"authored,omitzero"`
}

// Subject is the first line of the message.
func (c CommitInfo) Subject() string {
	s, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return s
}

// CommitRecord is the status of one commit.
type CommitRecord struct {
	Repo    forge.RepoID `json:"-"`
	Commit  string       `json:"commit"`
	State   forge.State  `json:"state"`
	Title   string       `json:"title"`
	Summary string       `json:"summary"`
	Updated time.Time    `json:"updated"`
	CommitInfo
	// Started and Finished span the commit's variants: the first start, and the last
	// end once none is queued or running.
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Duration is the time from the first variant's start to the last one's end, or to
// now while some still run.
func (c CommitRecord) Duration() time.Duration {
	switch {
	case c.Started.IsZero():
		return 0
	case c.Finished.IsZero():
		return time.Since(c.Started)
	}
	return c.Finished.Sub(c.Started)
}

// RefRecord is a ref's current head, or one of its earlier heads in a history.
type RefRecord struct {
	Repo   forge.RepoID `json:"-"`
	Name   string       `json:"name"`
	PR     int          `json:"pr,omitempty"`
	Title  string       `json:"title,omitempty"`
	Commit string       `json:"commit"`
	State  forge.State  `json:"state"`
	Seen   time.Time    `json:"seen"`
	CommitInfo
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Duration is the time the commit's variants took (see CommitRecord.Duration).
func (r RefRecord) Duration() time.Duration {
	return CommitRecord{Started: r.Started, Finished: r.Finished}.Duration()
}

var indexSchema = []string{
	`CREATE TABLE IF NOT EXISTS ref_heads (forge TEXT, owner TEXT, repo TEXT, ref TEXT, pr INTEGER, title TEXT,
		commit_id TEXT, seen INTEGER, PRIMARY KEY (forge, owner, repo, ref, commit_id))`,
	`CREATE TABLE IF NOT EXISTS commits (forge TEXT, owner TEXT, repo TEXT, commit_id TEXT, state TEXT, title TEXT,
		summary TEXT, updated INTEGER, PRIMARY KEY (forge, owner, repo, commit_id))`,
	`CREATE TABLE IF NOT EXISTS variants (forge TEXT, owner TEXT, repo TEXT, commit_id TEXT, name TEXT, job_id TEXT,
		state TEXT, message TEXT, experimental INTEGER, started INTEGER, finished INTEGER,
		PRIMARY KEY (forge, owner, repo, commit_id, name))`,
}

// indexColumns are columns added since the first schema, for databases made before.
var indexColumns = []string{
	`ALTER TABLE commits ADD COLUMN message TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE commits ADD COLUMN author TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE commits ADD COLUMN authored INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE variants ADD COLUMN lines TEXT NOT NULL DEFAULT ''`,
}

// OpenIndex opens (creating it if needed) the index database at path.
func OpenIndex(path string) (*Index, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range indexSchema {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			return nil, fmt.Errorf("index %s: schema: %w", path, err)
		}
	}
	for _, q := range indexColumns {
		if _, err := db.Exec(q); err != nil && !strings.Contains(err.Error(), "duplicate column name") {
			db.Close()
			return nil, fmt.Errorf("index %s: schema: %w", path, err)
		}
	}
	return &Index{db: db}, nil
}

// Close closes the database.
func (x *Index) Close() error { return x.db.Close() }

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnix(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// SetVariant records a variant's job and state.
func (x *Index) SetVariant(ctx context.Context, v VariantRecord) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO variants (forge, owner, repo, commit_id, name, job_id, state, message,
		experimental, started, finished, lines) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT DO UPDATE SET job_id=excluded.job_id, state=excluded.state, message=excluded.message,
		experimental=excluded.experimental, started=excluded.started, finished=excluded.finished, lines=excluded.lines`,
		v.Repo.Forge, v.Repo.Owner, v.Repo.Name, v.Commit, v.Name, v.JobID, string(v.State), v.Message, v.Experimental,
		unix(v.Started), unix(v.Finished), strings.Join(v.Lines, "\n"))
	return err
}

// Variant returns one variant of a commit, or nil.
func (x *Index) Variant(ctx context.Context, r forge.RepoID, commit, name string) (*VariantRecord, error) {
	vs, err := x.variants(ctx, r, commit, name)
	if err != nil || len(vs) == 0 {
		return nil, err
	}
	return &vs[0], nil
}

// Variants lists the variants of a commit by name.
func (x *Index) Variants(ctx context.Context, r forge.RepoID, commit string) ([]VariantRecord, error) {
	return x.variants(ctx, r, commit, "")
}

func (x *Index) variants(ctx context.Context, r forge.RepoID, commit, name string) ([]VariantRecord, error) {
	q := `SELECT commit_id, name, job_id, state, message, experimental, started, finished, lines FROM variants
		WHERE forge=? AND owner=? AND repo=? AND commit_id=?`
	args := []any{r.Forge, r.Owner, r.Name, commit}
	if name != "" {
		q += ` AND name=?`
		args = append(args, name)
	}
	rows, err := x.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VariantRecord
	for rows.Next() {
		v := VariantRecord{Repo: r}
		var state, lines string
		var started, finished int64
		if err := rows.Scan(&v.Commit, &v.Name, &v.JobID, &state, &v.Message, &v.Experimental, &started, &finished, &lines); err != nil {
			return nil, err
		}
		v.State, v.Started, v.Finished = forge.State(state), fromUnix(started), fromUnix(finished)
		if lines != "" {
			v.Lines = strings.Split(lines, "\n")
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// SetHead records that a ref's head is its commit (with the pull request's title).
func (x *Index) SetHead(ctx context.Context, ref forge.Ref) error {
	r := ref.Repo
	_, err := x.db.ExecContext(ctx, `INSERT INTO ref_heads VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET title=excluded.title`,
		r.Forge, r.Owner, r.Name, ref.Name, ref.PR, ref.Title, ref.Commit, unix(time.Now()))
	return err
}

// SetCommit records a commit's status. Variants not yet started are recorded as
// queued, so the UI lists them.
func (x *Index) SetCommit(ctx context.Context, r forge.RepoID, commit string, st forge.Status, variants []forge.Variant) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now()
	if _, err := tx.ExecContext(ctx, `INSERT INTO commits (forge, owner, repo, commit_id, state, title, summary, updated)
		VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET
		state=excluded.state, title=excluded.title, summary=excluded.summary, updated=excluded.updated`,
		r.Forge, r.Owner, r.Name, commit, string(st.State), st.Title, st.Summary, unix(now)); err != nil {
		return err
	}
	// Once the analysis has listed the variants, those no longer listed (the analysis
	// itself, variants of an older plan) go.
	if len(variants) > 0 && !(len(variants) == 1 && variants[0].Name == AnalysisVariant) {
		names := make([]any, 0, len(variants)+4)
		names = append(names, r.Forge, r.Owner, r.Name, commit)
		marks := make([]string, len(variants))
		for i, v := range variants {
			names = append(names, v.Name)
			marks[i] = "?"
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM variants WHERE forge=? AND owner=? AND repo=? AND commit_id=? AND name NOT IN (`+
			strings.Join(marks, ",")+`)`, names...); err != nil {
			return err
		}
	}
	for _, v := range variants {
		if _, err := tx.ExecContext(ctx, `INSERT INTO variants (forge, owner, repo, commit_id, name, job_id, state, message, experimental, started, finished, lines)
			VALUES (?,?,?,?,?,'',?,?,?,0,0,?) ON CONFLICT DO UPDATE SET state=excluded.state, experimental=excluded.experimental,
			message=CASE WHEN excluded.message != '' THEN excluded.message ELSE message END,
			lines=CASE WHEN excluded.lines != '' THEN excluded.lines ELSE lines END`,
			r.Forge, r.Owner, r.Name, commit, v.Name, string(v.State), v.Message, v.Experimental, strings.Join(v.FailingLines, "\n")); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// SetCommitInfo records what git says of a commit (its message, author and date).
func (x *Index) SetCommitInfo(ctx context.Context, r forge.RepoID, commit string, info CommitInfo) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO commits (forge, owner, repo, commit_id, state, title, summary, updated, message, author, authored)
		VALUES (?,?,?,?,'queued','','',?,?,?,?) ON CONFLICT DO UPDATE SET message=excluded.message, author=excluded.author, authored=excluded.authored`,
		r.Forge, r.Owner, r.Name, commit, unix(time.Now()), info.Message, info.Author, unix(info.Authored))
	if err != nil {
		return fmt.Errorf("record commit %s of %s: %w", commit, r, err)
	}
	return nil
}

// spanOf is the SQL of a commit's span over its variants (first start; last end, 0
// while some are unfinished), the commit's row being c.
const spanOf = `(SELECT MIN(NULLIF(v.started, 0)) FROM variants v WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id),
	(SELECT CASE WHEN SUM(v.state IN ('queued', 'running')) > 0 THEN 0 ELSE MAX(v.finished) END FROM variants v
		WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id)`

// Unfinished lists the commits of the given forges whose status is still queued or
// running, or that have a variant still queued or running (a commit fails as soon as
// one variant does).
func (x *Index) Unfinished(ctx context.Context, forges []string) ([]CommitRecord, error) {
	if len(forges) == 0 {
		return nil, nil
	}
	args := make([]any, len(forges))
	for i, f := range forges {
		args[i] = f
	}
	rows, err := x.db.QueryContext(ctx, `SELECT forge, owner, repo, commit_id, state, title FROM commits c
		WHERE forge IN (?`+strings.Repeat(",?", len(forges)-1)+`) AND (state IN ('queued', 'running') OR EXISTS (SELECT 1 FROM variants v
			WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id AND v.state IN ('queued', 'running')))
		ORDER BY forge, owner, repo, commit_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []CommitRecord
	for rows.Next() {
		var c CommitRecord
		var state string
		if err := rows.Scan(&c.Repo.Forge, &c.Repo.Owner, &c.Repo.Name, &c.Commit, &state, &c.Title); err != nil {
			return nil, err
		}
		c.State = forge.State(state)
		out = append(out, c)
	}
	return out, rows.Err()
}

// CancelUnfinished records the variants of a commit that are queued or running as
// cancelled, with message (why), and returns all the commit's variants.
func (x *Index) CancelUnfinished(ctx context.Context, r forge.RepoID, commit, message string) ([]VariantRecord, error) {
	if _, err := x.db.ExecContext(ctx, `UPDATE variants SET state='cancelled', message=?,
		finished=CASE WHEN started > 0 THEN ? ELSE finished END
		WHERE forge=? AND owner=? AND repo=? AND commit_id=? AND state IN ('queued', 'running')`,
		message, unix(time.Now()), r.Forge, r.Owner, r.Name, commit); err != nil {
		return nil, fmt.Errorf("cancel the variants of %s %s: %w", r, commit, err)
	}
	return x.Variants(ctx, r, commit)
}

// RenameRepo moves the records of a repository renamed or transferred to its new name,
// so that its history is found there; records the new name already has are kept.
func (x *Index) RenameRepo(ctx context.Context, from, to forge.RepoID) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, table := range []string{"ref_heads", "commits", "variants"} {
		if _, err := tx.ExecContext(ctx, `UPDATE OR IGNORE `+table+` SET forge=?, owner=?, repo=? WHERE forge=? AND owner=? AND repo=?`,
			to.Forge, to.Owner, to.Name, from.Forge, from.Owner, from.Name); err != nil {
			return fmt.Errorf("rename %s to %s: %w", from, to, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE forge=? AND owner=? AND repo=?`, from.Forge, from.Owner, from.Name); err != nil {
			return fmt.Errorf("rename %s to %s: %w", from, to, err)
		}
	}
	return tx.Commit()
}

// Commit returns a commit's status, or nil when it has none yet.
func (x *Index) Commit(ctx context.Context, r forge.RepoID, commit string) (*CommitRecord, error) {
	c := CommitRecord{Repo: r, Commit: commit}
	var state string
	var updated, authored int64
	var started, finished sql.NullInt64
	err := x.db.QueryRowContext(ctx, `SELECT state, title, summary, updated, message, author, authored, `+spanOf+`
		FROM commits c WHERE forge=? AND owner=? AND repo=? AND commit_id=?`,
		r.Forge, r.Owner, r.Name, commit).Scan(&state, &c.Title, &c.Summary, &updated, &c.Message, &c.Author, &authored, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c.State, c.Updated, c.Authored = forge.State(state), fromUnix(updated), fromUnix(authored)
	c.Started, c.Finished = fromUnix(started.Int64), fromUnix(finished.Int64)
	return &c, nil
}

// Owners lists the owners with repositories on a forge.
func (x *Index) Owners(ctx context.Context, forgeName string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT owner FROM ref_heads WHERE forge=? ORDER BY owner`, forgeName)
}

// Repos lists an owner's repositories.
func (x *Index) Repos(ctx context.Context, forgeName, owner string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT repo FROM ref_heads WHERE forge=? AND owner=? ORDER BY repo`, forgeName, owner)
}

func (x *Index) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := x.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Refs lists a repository's refs with their latest head (ref == "") or the history of
// one ref, newest first.
func (x *Index) Refs(ctx context.Context, r forge.RepoID, ref string) ([]RefRecord, error) {
	q := `SELECT h.ref, h.pr, h.title, h.commit_id, COALESCE(c.state, 'queued'), h.seen,
		COALESCE(c.message, ''), COALESCE(c.author, ''), COALESCE(c.authored, 0), ` + spanOf + ` FROM ref_heads h
		LEFT JOIN commits c ON c.forge=h.forge AND c.owner=h.owner AND c.repo=h.repo AND c.commit_id=h.commit_id
		WHERE h.forge=? AND h.owner=? AND h.repo=?`
	args := []any{r.Forge, r.Owner, r.Name}
	if ref != "" {
		q += ` AND h.ref=? ORDER BY h.seen DESC`
		args = append(args, ref)
	} else {
		q += ` AND h.seen = (SELECT MAX(seen) FROM ref_heads m WHERE m.forge=h.forge AND m.owner=h.owner AND m.repo=h.repo AND m.ref=h.ref)
			ORDER BY h.ref`
	}
	rows, err := x.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RefRecord
	for rows.Next() {
		rr := RefRecord{Repo: r}
		var state string
		var seen, authored int64
		var started, finished sql.NullInt64
		if err := rows.Scan(&rr.Name, &rr.PR, &rr.Title, &rr.Commit, &state, &seen, &rr.Message, &rr.Author, &authored, &started, &finished); err != nil {
			return nil, err
		}
		rr.State, rr.Seen, rr.Authored = forge.State(state), fromUnix(seen), fromUnix(authored)
		rr.Started, rr.Finished = fromUnix(started.Int64), fromUnix(finished.Int64)
		out = append(out, rr)
	}
	return out, rows.Err()
}

// Stats are a repository's reliability and run-time figures over its recorded variants.
type Stats struct {
	Variants     int           `json:"variants"`
	Passed       int           `json:"passed"`
	Failed       int           `json:"failed"`
	Errors       int           `json:"errors"` // infrastructure failures
	Cancelled    int           `json:"cancelled"`
	MeanDuration time.Duration `json:"mean_duration"`
}

// RepoStats computes a repository's statistics.
func (x *Index) RepoStats(ctx context.Context, r forge.RepoID) (Stats, error) {
	var s Stats
	var mean sql.NullFloat64
	err := x.db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(state='passed'), SUM(state='failed'), SUM(state='error'), SUM(state='cancelled'),
		AVG(CASE WHEN finished > 0 AND started > 0 AND state != 'cancelled' THEN finished - started END)
		FROM variants WHERE forge=? AND owner=? AND repo=?`, r.Forge, r.Owner, r.Name).Scan(&s.Variants, nullInt{&s.Passed}, nullInt{&s.Failed}, nullInt{&s.Errors}, nullInt{&s.Cancelled}, &mean)
	if err != nil {
		return s, err
	}
	if mean.Valid {
		s.MeanDuration = time.Duration(mean.Float64) * time.Millisecond
	}
	return s, nil
}

type nullInt struct{ p *int }

func (n nullInt) Scan(v any) error {
	var x sql.NullInt64
	if err := x.Scan(v); err != nil {
		return err
	}
	*n.p = int(x.Int64)
	return nil
}

// MarshalJSON includes the repository in records served by the API.
func (r RefRecord) MarshalJSON() ([]byte, error) {
	type plain RefRecord
	return json.Marshal(struct {
		plain
		Repo string `json:"repo"`
	}{plain(r), r.Repo.String()})
}
