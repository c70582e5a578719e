// Package results is what services show of their work: an index of the refs, commits
// and variants (jobs) a service built, in SQLite or PostgreSQL, and the web pages over
// it (a page per forge, owner, repository, commit, variant and ref history, each with
// its JSON twin under /api/, and badges), linking to the console's job pages for logs
// and actions.
package results

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/services/internal/servicedb"
)

// Index records what a service did, for the web UI: the refs of each repository and
// their history, each commit's status and each variant's job.
type Index struct {
	db *servicedb.DB
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

// indexSchema's tables are named {p}ref_heads, {p}commits and {p}variants, {p} being
// the index's prefix. The first migration adopts the tables of files made before
// migrations (they lack the later columns, which OpenIndex adds).
var indexSchema = []string{
	`CREATE TABLE IF NOT EXISTS {p}ref_heads (forge {{key}} NOT NULL, owner {{key}} NOT NULL, repo {{key}} NOT NULL,
		ref {{key}} NOT NULL, pr BIGINT NOT NULL DEFAULT 0, title TEXT NOT NULL DEFAULT '', commit_id {{key}} NOT NULL,
		seen BIGINT NOT NULL, PRIMARY KEY (forge, owner, repo, ref, commit_id));
	CREATE TABLE IF NOT EXISTS {p}commits (forge {{key}} NOT NULL, owner {{key}} NOT NULL, repo {{key}} NOT NULL,
		commit_id {{key}} NOT NULL, state TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', summary TEXT NOT NULL DEFAULT '',
		updated BIGINT NOT NULL, message TEXT NOT NULL DEFAULT '', author TEXT NOT NULL DEFAULT '',
		authored BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (forge, owner, repo, commit_id));
	CREATE TABLE IF NOT EXISTS {p}variants (forge {{key}} NOT NULL, owner {{key}} NOT NULL, repo {{key}} NOT NULL,
		commit_id {{key}} NOT NULL, name {{key}} NOT NULL, job_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,
		message TEXT NOT NULL DEFAULT '', experimental BOOLEAN NOT NULL DEFAULT FALSE, started BIGINT NOT NULL DEFAULT 0,
		finished BIGINT NOT NULL DEFAULT 0, lines TEXT NOT NULL DEFAULT '', PRIMARY KEY (forge, owner, repo, commit_id, name))`,
}

// legacyColumns are the columns added to SQLite files before the index had
// migrations, for the files made before them.
var legacyColumns = []string{
	`ALTER TABLE commits ADD COLUMN message TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE commits ADD COLUMN author TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE commits ADD COLUMN authored INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE variants ADD COLUMN lines TEXT NOT NULL DEFAULT ''`,
}

// OpenIndex opens (creating it if needed) the index in the SQLite file at path.
func OpenIndex(path string) (*Index, error) {
	return Open(context.Background(), path, "")
}

// Open opens (creating and migrating it if needed) the index in the database at
// target, a SQLite file's path or a postgres:// URL. Its tables' names start with
// prefix (letters, digits and _), so that several indexes share one database.
func Open(ctx context.Context, target, prefix string) (*Index, error) {
	db, err := servicedb.Open(ctx, target, prefix, "results", indexSchema)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	if db.Backend() == database.SQLite && prefix == "" {
		for _, q := range legacyColumns {
			if _, err := db.ExecContext(ctx, q); err != nil && !strings.Contains(err.Error(), "duplicate column name") {
				db.Close()
				return nil, fmt.Errorf("open index %s: add a column to a file made before migrations: %w", db, err)
			}
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

// placeholders is "$from, $from+1, …" for n arguments.
func placeholders(from, n int) string {
	marks := make([]string, n)
	for i := range marks {
		marks[i] = "$" + strconv.Itoa(from+i)
	}
	return strings.Join(marks, ",")
}

// SetVariant records a variant's job and state.
func (x *Index) SetVariant(ctx context.Context, v VariantRecord) error {
	_, err := x.db.ExecContext(ctx, x.db.Q(`INSERT INTO {p}variants (forge, owner, repo, commit_id, name, job_id, state, message,
		experimental, started, finished, lines) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
		ON CONFLICT (forge, owner, repo, commit_id, name) DO UPDATE SET job_id=excluded.job_id, state=excluded.state,
		message=excluded.message, experimental=excluded.experimental, started=excluded.started, finished=excluded.finished,
		lines=excluded.lines`),
		v.Repo.Forge, v.Repo.Owner, v.Repo.Name, v.Commit, v.Name, v.JobID, string(v.State), v.Message, v.Experimental,
		unix(v.Started), unix(v.Finished), strings.Join(v.Lines, "\n"))
	if err != nil {
		return fmt.Errorf("record variant %s of %s %s: %w", v.Name, v.Repo, v.Commit, err)
	}
	return nil
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
	q := `SELECT commit_id, name, job_id, state, message, experimental, started, finished, lines FROM {p}variants
		WHERE forge=$1 AND owner=$2 AND repo=$3 AND commit_id=$4`
	args := []any{r.Forge, r.Owner, r.Name, commit}
	if name != "" {
		q += ` AND name=$5`
		args = append(args, name)
	}
	rows, err := x.db.QueryContext(ctx, x.db.Q(q+` ORDER BY name`), args...)
	if err != nil {
		return nil, fmt.Errorf("variants of %s %s: %w", r, commit, err)
	}
	defer rows.Close()
	var out []VariantRecord
	for rows.Next() {
		v := VariantRecord{Repo: r}
		var state, lines string
		var started, finished int64
		if err := rows.Scan(&v.Commit, &v.Name, &v.JobID, &state, &v.Message, &v.Experimental, &started, &finished, &lines); err != nil {
			return nil, fmt.Errorf("variants of %s %s: %w", r, commit, err)
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
	_, err := x.db.ExecContext(ctx, x.db.Q(`INSERT INTO {p}ref_heads (forge, owner, repo, ref, pr, title, commit_id, seen)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (forge, owner, repo, ref, commit_id) DO UPDATE SET title=excluded.title`),
		r.Forge, r.Owner, r.Name, ref.Name, ref.PR, ref.Title, ref.Commit, unix(time.Now()))
	if err != nil {
		return fmt.Errorf("record head %s of %s: %w", ref.Name, r, err)
	}
	return nil
}

// SetCommit records a commit's status. Variants not yet started are recorded as
// queued, so the UI lists them.
func (x *Index) SetCommit(ctx context.Context, r forge.RepoID, commit string, st forge.Status, variants []forge.Variant) error {
	err := x.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, x.db.Q(`INSERT INTO {p}commits (forge, owner, repo, commit_id, state, title, summary, updated)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (forge, owner, repo, commit_id) DO UPDATE SET
			state=excluded.state, title=excluded.title, summary=excluded.summary, updated=excluded.updated`),
			r.Forge, r.Owner, r.Name, commit, string(st.State), st.Title, st.Summary, unix(time.Now())); err != nil {
			return err
		}
		// Once the analysis has listed the variants, those no longer listed (the analysis
		// itself, variants of an older plan) go.
		if len(variants) > 0 && !(len(variants) == 1 && variants[0].Name == AnalysisVariant) {
			args := make([]any, 0, len(variants)+4)
			args = append(args, r.Forge, r.Owner, r.Name, commit)
			for _, v := range variants {
				args = append(args, v.Name)
			}
			if _, err := tx.ExecContext(ctx, x.db.Q(`DELETE FROM {p}variants WHERE forge=$1 AND owner=$2 AND repo=$3 AND commit_id=$4
				AND name NOT IN (`+placeholders(5, len(variants))+`)`), args...); err != nil {
				return err
			}
		}
		for _, v := range variants {
			if _, err := tx.ExecContext(ctx, x.db.Q(`INSERT INTO {p}variants (forge, owner, repo, commit_id, name, job_id, state,
				message, experimental, started, finished, lines) VALUES ($1,$2,$3,$4,$5,'',$6,$7,$8,0,0,$9)
				ON CONFLICT (forge, owner, repo, commit_id, name) DO UPDATE SET state=excluded.state,
				experimental=excluded.experimental,
				message=CASE WHEN excluded.message != '' THEN excluded.message ELSE {p}variants.message END,
				lines=CASE WHEN excluded.lines != '' THEN excluded.lines ELSE {p}variants.lines END`),
				r.Forge, r.Owner, r.Name, commit, v.Name, string(v.State), v.Message, v.Experimental,
				strings.Join(v.FailingLines, "\n")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record the status of %s %s: %w", r, commit, err)
	}
	return nil
}

// SetCommitInfo records what git says of a commit (its message, author and date).
func (x *Index) SetCommitInfo(ctx context.Context, r forge.RepoID, commit string, info CommitInfo) error {
	_, err := x.db.ExecContext(ctx, x.db.Q(`INSERT INTO {p}commits (forge, owner, repo, commit_id, state, title, summary, updated,
		message, author, authored) VALUES ($1,$2,$3,$4,'queued','','',$5,$6,$7,$8)
		ON CONFLICT (forge, owner, repo, commit_id) DO UPDATE SET message=excluded.message, author=excluded.author,
		authored=excluded.authored`),
		r.Forge, r.Owner, r.Name, commit, unix(time.Now()), info.Message, info.Author, unix(info.Authored))
	if err != nil {
		return fmt.Errorf("record commit %s of %s: %w", commit, r, err)
	}
	return nil
}

// spanOf is the SQL of a commit's span over its variants (first start; last end, 0
// while some are unfinished), the commit's row being c.
const spanOf = `(SELECT MIN(NULLIF(v.started, 0)) FROM {p}variants v
		WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id),
	(SELECT CASE WHEN COUNT(CASE WHEN v.state IN ('queued', 'running') THEN 1 END) > 0 THEN 0 ELSE MAX(v.finished) END
		FROM {p}variants v WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id)`

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
	rows, err := x.db.QueryContext(ctx, x.db.Q(`SELECT forge, owner, repo, commit_id, state, title FROM {p}commits c
		WHERE forge IN (`+placeholders(1, len(forges))+`) AND (state IN ('queued', 'running') OR EXISTS (SELECT 1 FROM {p}variants v
			WHERE v.forge=c.forge AND v.owner=c.owner AND v.repo=c.repo AND v.commit_id=c.commit_id AND v.state IN ('queued', 'running')))
		ORDER BY forge, owner, repo, commit_id`), args...)
	if err != nil {
		return nil, fmt.Errorf("unfinished commits: %w", err)
	}
	defer rows.Close()
	var out []CommitRecord
	for rows.Next() {
		var c CommitRecord
		var state string
		if err := rows.Scan(&c.Repo.Forge, &c.Repo.Owner, &c.Repo.Name, &c.Commit, &state, &c.Title); err != nil {
			return nil, fmt.Errorf("unfinished commits: %w", err)
		}
		c.State = forge.State(state)
		out = append(out, c)
	}
	return out, rows.Err()
}

// CancelUnfinished records the variants of a commit that are queued or running as
// cancelled, with message (why), and returns all the commit's variants.
func (x *Index) CancelUnfinished(ctx context.Context, r forge.RepoID, commit, message string) ([]VariantRecord, error) {
	if _, err := x.db.ExecContext(ctx, x.db.Q(`UPDATE {p}variants SET state='cancelled', message=$1,
		finished=CASE WHEN started > 0 THEN $2 ELSE finished END
		WHERE forge=$3 AND owner=$4 AND repo=$5 AND commit_id=$6 AND state IN ('queued', 'running')`),
		message, unix(time.Now()), r.Forge, r.Owner, r.Name, commit); err != nil {
		return nil, fmt.Errorf("cancel the variants of %s %s: %w", r, commit, err)
	}
	return x.Variants(ctx, r, commit)
}

// renameKeys are, for each table, the columns of its key besides the repository's.
var renameKeys = []struct{ table, keys string }{
	{"ref_heads", "ref, commit_id"}, {"commits", "commit_id"}, {"variants", "commit_id, name"},
}

// RenameRepo moves the records of a repository renamed or transferred to its new name,
// so that its history is found there; records the new name already has are kept.
func (x *Index) RenameRepo(ctx context.Context, from, to forge.RepoID) error {
	if from == to {
		return nil
	}
	err := x.db.Tx(ctx, func(tx *sql.Tx) error {
		for _, t := range renameKeys {
			var same []string
			for k := range strings.SplitSeq(t.keys, ", ") {
				same = append(same, "n."+k+"=o."+k)
			}
			if _, err := tx.ExecContext(ctx, x.db.Q(`UPDATE {p}`+t.table+` AS o SET forge=$1, owner=$2, repo=$3
				WHERE forge=$4 AND owner=$5 AND repo=$6 AND NOT EXISTS (SELECT 1 FROM {p}`+t.table+` n
					WHERE n.forge=$1 AND n.owner=$2 AND n.repo=$3 AND `+strings.Join(same, " AND ")+`)`),
				to.Forge, to.Owner, to.Name, from.Forge, from.Owner, from.Name); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, x.db.Q(`DELETE FROM {p}`+t.table+` WHERE forge=$1 AND owner=$2 AND repo=$3`),
				from.Forge, from.Owner, from.Name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return nil
}

// Commit returns a commit's status, or nil when it has none yet.
func (x *Index) Commit(ctx context.Context, r forge.RepoID, commit string) (*CommitRecord, error) {
	c := CommitRecord{Repo: r, Commit: commit}
	var state string
	var updated, authored int64
	var started, finished sql.NullInt64
	err := x.db.QueryRowContext(ctx, x.db.Q(`SELECT state, title, summary, updated, message, author, authored, `+spanOf+`
		FROM {p}commits c WHERE forge=$1 AND owner=$2 AND repo=$3 AND commit_id=$4`),
		r.Forge, r.Owner, r.Name, commit).Scan(&state, &c.Title, &c.Summary, &updated, &c.Message, &c.Author, &authored, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("status of %s %s: %w", r, commit, err)
	}
	c.State, c.Updated, c.Authored = forge.State(state), fromUnix(updated), fromUnix(authored)
	c.Started, c.Finished = fromUnix(started.Int64), fromUnix(finished.Int64)
	return &c, nil
}

// Owners lists the owners with repositories on a forge.
func (x *Index) Owners(ctx context.Context, forgeName string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT owner FROM {p}ref_heads WHERE forge=$1 ORDER BY owner`, forgeName)
}

// Repos lists an owner's repositories.
func (x *Index) Repos(ctx context.Context, forgeName, owner string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT repo FROM {p}ref_heads WHERE forge=$1 AND owner=$2 ORDER BY repo`, forgeName, owner)
}

func (x *Index) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := x.db.QueryContext(ctx, x.db.Q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list %v: %w", args, err)
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
		COALESCE(c.message, ''), COALESCE(c.author, ''), COALESCE(c.authored, 0), ` + spanOf + ` FROM {p}ref_heads h
		LEFT JOIN {p}commits c ON c.forge=h.forge AND c.owner=h.owner AND c.repo=h.repo AND c.commit_id=h.commit_id
		WHERE h.forge=$1 AND h.owner=$2 AND h.repo=$3`
	args := []any{r.Forge, r.Owner, r.Name}
	if ref != "" {
		q += ` AND h.ref=$4 ORDER BY h.seen DESC`
		args = append(args, ref)
	} else {
		q += ` AND h.seen = (SELECT MAX(seen) FROM {p}ref_heads m WHERE m.forge=h.forge AND m.owner=h.owner AND m.repo=h.repo AND m.ref=h.ref)
			ORDER BY h.ref`
	}
	rows, err := x.db.QueryContext(ctx, x.db.Q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("refs of %s: %w", r, err)
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
	err := x.db.QueryRowContext(ctx, x.db.Q(`SELECT COUNT(*), COUNT(CASE WHEN state='passed' THEN 1 END),
		COUNT(CASE WHEN state='failed' THEN 1 END), COUNT(CASE WHEN state='error' THEN 1 END),
		COUNT(CASE WHEN state='cancelled' THEN 1 END),
		CAST(AVG(CASE WHEN finished > 0 AND started > 0 AND state != 'cancelled' THEN finished - started END) AS DOUBLE PRECISION)
		FROM {p}variants WHERE forge=$1 AND owner=$2 AND repo=$3`), r.Forge, r.Owner, r.Name).Scan(
		&s.Variants, &s.Passed, &s.Failed, &s.Errors, &s.Cancelled, &mean)
	if err != nil {
		return s, fmt.Errorf("statistics of %s: %w", r, err)
	}
	if mean.Valid {
		s.MeanDuration = time.Duration(mean.Float64) * time.Millisecond
	}
	return s, nil
}

// MarshalJSON includes the repository in records served by the API.
func (r RefRecord) MarshalJSON() ([]byte, error) {
	type plain RefRecord
	return json.Marshal(struct {
		plain
		Repo string `json:"repo"`
	}{plain(r), r.Repo.String()})
}
