package current

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestShutdownInterruptsAndResumes(t *testing.T) { eachBackend(t, testShutdownInterruptsAndResumes) }

func testShutdownInterruptsAndResumes(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	var runs atomic.Int64
	started := make(chan struct{}, 2)
	op := &Op[string, string]{Name: "long", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		n := runs.Add(1)
		j.Logf("attempt %d", n)
		if n == 1 {
			started <- struct{}{}
			<-ctx.Done()
			return "", ctx.Err()
		}
		return "done", nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, Do(op, Return("k"))) }()
	<-started
	cancel()
	<-done
	r, _ := e.Query(Query{})
	if len(r) != 1 || r[0].State != JobInterrupted {
		t.Fatalf("after shutdown: %+v", r)
	}
	running(t, e, Do(op, Return("k")))
	eventually(t, "resumed", func() bool { d, _ := e.Job(r[0].ID); return d.State == JobOK })
	c, _ := e.ReadLog(r[0].ID, 0, 0)
	if !strings.Contains(string(c.Data), "attempt 1") || !strings.Contains(string(c.Data), "attempt 2") {
		t.Fatalf("log: %s", c.Data)
	}
}

func TestRebuildNotLiveAndBulk(t *testing.T) { eachBackend(t, testRebuildNotLiveAndBulk) }

func testRebuildNotLiveAndBulk(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	var runs sync32
	op := counterOp("build", &runs)
	src := NewVar("src", []string{"bad-a", "bad-b", "good"})
	running(t, e, ListMap(src.Term(), func(s string) string { return s }, func(s Term[string]) Term[Result[string]] { return Catch(Do(op, s)) }))
	eventually(t, "built", func() bool { return runs.total() == 3 })
	eventually(t, "recorded", func() bool { r, _ := e.Query(Query{States: []JobState{JobOK, JobFailed}}); return len(r) == 3 })
	// bad-b leaves the graph; a bulk rebuild of failures rebuilds bad-a now and bad-b
	// when it is wanted again.
	src.Set([]string{"bad-a", "good"})
	eventually(t, "bad-b not live", func() bool {
		r, _ := e.Query(Query{KeyContains: "bad-b"})
		return len(r) == 1 && !r[0].Live
	})
	n, err := e.RebuildQuery(Query{States: []JobState{JobFailed}, KeyContains: "bad"})
	if err != nil || n != 2 {
		t.Fatalf("bulk rebuild: %d %v", n, err)
	}
	eventually(t, "bad-a rebuilt", func() bool { return runs.get("bad-a") == 2 })
	r, _ := e.Query(Query{KeyContains: "bad-b"})
	if !r[0].Rebuild || runs.get("bad-b") != 1 {
		t.Fatalf("bad-b: %+v runs %d", r[0], runs.get("bad-b"))
	}
	src.Set([]string{"bad-a", "bad-b", "good"})
	eventually(t, "bad-b rebuilt when wanted", func() bool { return runs.get("bad-b") == 2 })
	if runs.get("good") != 1 {
		t.Fatalf("good rebuilt: %v", runs.snapshot())
	}
}

func TestMonitorSurvivesReplacement(t *testing.T) {
	e := testEngine(t, Config{})
	var starts atomic.Int64
	m := &Monitor[int]{Name: "m",
		Read: func(ctx context.Context) (int, error) { return 1, nil },
		Watch: func(ctx context.Context, refresh func()) error {
			starts.Add(1)
			<-ctx.Done()
			return nil
		}}
	v := NewVar("v", 0)
	var last atomic.Int64
	running(t, e, Bind(v.Term(), func(x int) Term[int] {
		return Map(m.Term(), func(y int) int { last.Store(int64(x + y)); return x + y })
	}))
	eventually(t, "watching", func() bool { return starts.Load() == 1 && m.Reads() == 1 && last.Load() == 1 })
	for i := 1; i <= 5; i++ {
		v.Set(i)
		eventually(t, "rebound", func() bool { return last.Load() == int64(i+1) })
	}
	if starts.Load() != 1 || m.Reads() != 1 {
		t.Fatalf("monitor restarted by the rebind: %d watches, %d reads", starts.Load(), m.Reads())
	}
}

func TestMetrics(t *testing.T) {
	e := testEngine(t, Config{})
	op := &Op[string, string]{Name: "m", Run: func(ctx context.Context, j *Job, in string) (string, error) { return in, nil }}
	running(t, e, Do(op, Return("x")))
	eventually(t, "done", func() bool { r, _ := e.Query(Query{States: []JobState{JobOK}}); return len(r) == 1 })
	rec := httptest.NewRecorder()
	e.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`kiln_engine_jobs_finished_total{failure_kind="",op="m",state="ok"} 1`,
		`kiln_engine_jobs_started_total{lane="urgent",op="m"} 1`,
		"kiln_engine_nodes 2",
		"kiln_engine_pass_duration_seconds_count",
		"kiln_engine_confirm_level 5",
		`kiln_engine_pool_slots{pool="default"} 4`,
		`kiln_engine_pool_waiting_jobs{lane="urgent",pool="default"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func FuzzParseLevel(f *testing.F) {
	for _, s := range []string{"harmless", "Average", " dangerous ", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLevel(s)
		if err != nil {
			return
		}
		back, err := ParseLevel(l.String())
		if err != nil || back != l {
			t.Fatalf("%q -> %v -> %v %v", s, l, back, err)
		}
	})
}

func FuzzLogRule(f *testing.F) {
	f.Add(`error: .* not found`, "error: libfoo not found\nok\n")
	f.Add(`(unclosed`, "x")
	f.Add(`^$`, "\n\n")
	f.Fuzz(func(t *testing.T, pattern, log string) {
		re, err := checkRule(pattern, "explanation")
		if err != nil {
			return
		}
		line, text, ok := matchLine([]byte(log), re)
		if ok && (line < 1 || !re.MatchString(text)) {
			t.Fatalf("match at line %d %q does not match", line, text)
		}
	})
}

func TestAbandonedInterruptedJobsFinish(t *testing.T) {
	eachBackend(t, testAbandonedInterruptedJobsFinish)
}

func testAbandonedInterruptedJobsFinish(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	row := jobRow{Op: "gone", Digest: "d", Key: "k", Build: 1, InputDigest: "i", State: "running", ReadyAt: 1}
	if err := e.db.insert(&row); err != nil {
		t.Fatal(err)
	}
	e.Close()
	cfg.InterruptedGrace, cfg.RetentionEvery = 50*time.Millisecond, 10*time.Millisecond
	e2 := testEngine(t, cfg)
	r, _ := e2.Query(Query{})
	if r[0].State != JobInterrupted {
		t.Fatalf("state after restart: %s", r[0].State)
	}
	eventually(t, "finished as interrupted", func() bool {
		r, _ := e2.Query(Query{Kinds: []FailureKind{FailInterrupted}})
		return len(r) == 1 && r[0].State == JobFailed && r[0].Rebuild
	})
}

func TestCorruptDatabase(t *testing.T) {
	dir := t.TempDir()
	db := dir + "/kiln.db"
	garbage := []byte(strings.Repeat("this is not a database\n", 200))
	if err := os.WriteFile(db, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), db) {
		t.Fatalf("opening a corrupt database: %v", err)
	}
	after, _ := os.ReadFile(db)
	if string(after) != string(garbage) {
		t.Fatal("the corrupt database was modified")
	}
}

// legacyMigration1 is the first migration as the releases before internal/database
// ran it, recording their version in schema_version.
const legacyMigration1 = `CREATE TABLE results (
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
	CREATE INDEX results_finished ON results(finished_at);`

func TestSchemaMigrations(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/kiln.db"
	// A database made by a release that knew only the first migration.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version(version) VALUES (1)`,
		legacyMigration1,
		`INSERT INTO results (op, digest, key, build, input_digest, state, ready_at) VALUES ('op', 'd', 'k', 1, 'i', 'ok', 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	e := testEngine(t, fileLogsOnly(t, Config{StateDir: dir}))
	if _, err := e.AddLogRule("x", "y"); err != nil {
		t.Fatalf("log rules table missing after migration: %v", err)
	}
	r, err := e.Query(Query{})
	if err != nil || len(r) != 1 {
		t.Fatalf("old results lost: %v %v", r, err)
	}
	var v int
	e.db.db.QueryRow(`SELECT MAX(version) FROM kiln_migrations WHERE schema_name = 'engine'`).Scan(&v)
	if v != len(schema.Migrations) {
		t.Fatalf("schema version %d, want %d", v, len(schema.Migrations))
	}
	e.Close()

	// A database from a newer release is refused, not damaged.
	s2, err := openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s2.db.Exec(`INSERT INTO kiln_migrations (schema_name, version, applied_at) VALUES ('engine', 99, 0)`)
	s2.close()
	if _, err := Open(Config{StateDir: dir}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{ConfirmLevel: 9},
		{Pools: map[string]int{"build": 0}},
		{LogMaxBytes: -1},
	} {
		cfg.StateDir = t.TempDir()
		if _, err := Open(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v): %v", cfg, err)
		}
	}
}

func TestPoll(t *testing.T) {
	e := testEngine(t, Config{})
	var value atomic.Int64
	value.Store(5)
	p := Poll("poll", 10*time.Millisecond, func(ctx context.Context) (int64, error) { return value.Load(), nil })
	var calls atomic.Int64
	var last atomic.Int64
	running(t, e, Map(p.Term(), func(v int64) int64 { calls.Add(1); last.Store(v); return v }))
	eventually(t, "several polls", func() bool { return p.Reads() >= 5 })
	if calls.Load() != 1 {
		t.Fatalf("unchanged polled value recomputed %d times", calls.Load())
	}
	value.Store(6)
	eventually(t, "new value", func() bool { return last.Load() == 6 })
	if calls.Load() != 2 {
		t.Fatalf("calls %d", calls.Load())
	}
}
