package current

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

// A symbolic link in the place of a job's log is neither read nor written through.
func TestLogSymlinkIsNotFollowed(t *testing.T) {
	e := testEngine(t, fileLogsOnly(t, Config{MaxRetries: -1}))
	secret := filepath.Join(t.TempDir(), "secret")
	const secretText = "SECRET of the server\n"
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	// The first job's log is a link before the job starts.
	first := e.logPath(1)
	if err := os.MkdirAll(filepath.Dir(first), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, first); err != nil {
		t.Fatal(err)
	}
	op := &Op[string, string]{Name: "x", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		j.Logf("output of %s", in)
		return "", errors.New("failed")
	}}
	running(t, e, All(Do(op, Return("a")), Do(op, Return("b"))))
	var jobs []JobInfo
	eventually(t, "both jobs to fail", func() bool {
		jobs, _ = e.Query(Query{States: []JobState{JobFailed}})
		return len(jobs) == 2
	})
	if jobs[0].ID != "1" && jobs[1].ID != "1" {
		t.Fatalf("jobs %s and %s: neither is the first job, whose log is the link", jobs[0].ID, jobs[1].ID)
	}
	if b, _ := os.ReadFile(secret); string(b) != secretText {
		t.Fatalf("a job wrote through the link in place of its log: %q", b)
	}
	// The second job's log is replaced by a link after the job finished.
	for _, j := range jobs {
		if p := e.logPath(mustID(t, j.ID)); p != first {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(secret, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, j := range jobs {
		cases := []struct {
			name string
			read func() (string, error)
		}{
			{"ReadLog", func() (string, error) {
				c, err := e.ReadLog(j.ID, 0, 0)
				return string(c.Data), err
			}},
			{"FollowLog", func() (string, error) {
				r, err := e.FollowLog(t.Context(), j.ID, 0)
				if err != nil {
					return "", err
				}
				defer r.Close()
				b := make([]byte, 100)
				n, err := r.Read(b)
				return string(b[:n]), err
			}},
			{"TestLogRule", func() (string, error) {
				ms, err := e.TestLogRule("SECRET", 10)
				for _, m := range ms {
					if m.Matched {
						return m.Text, nil
					}
				}
				return "", err
			}},
		}
		for _, c := range cases {
			t.Run(c.name+" of job "+j.ID, func(t *testing.T) {
				text, err := c.read()
				if strings.Contains(text, "SECRET") {
					t.Fatalf("read the file the link points to: %q", text)
				}
				if c.name != "TestLogRule" && (err == nil || !strings.Contains(err.Error(), "symbolic link")) {
					t.Fatalf("error %v, want one saying the log is a symbolic link", err)
				}
			})
		}
	}
}

func mustID(t *testing.T, id string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// With the logs in PostgreSQL, an engine follows the live log of a job another engine
// on the same database runs.
func TestFollowLogFromAnotherEngine(t *testing.T) {
	db := databasetest.Postgres(t)
	runner := testEngine(t, Config{StateDir: t.TempDir(), Database: db})
	step := make(chan struct{})
	op := &Op[string, string]{Name: "talk", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		for i := 0; i < 3; i++ {
			j.Logf("line %d", i)
			select {
			case <-step:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return "", nil
	}}
	running(t, runner, Do(op, Return("x")))
	eventually(t, "job", func() bool { return len(runner.Jobs()) == 1 })
	id := runner.Jobs()[0].ID
	reader := testEngine(t, Config{StateDir: t.TempDir(), Database: db})
	cases := []struct {
		name   string
		offset int64
	}{
		{"from the start", 0},
		{"from an offset", 5},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results := make([]chan string, len(cases))
	for i, c := range cases {
		r, err := reader.FollowLog(ctx, id, c.offset)
		if err != nil {
			t.Fatal(err)
		}
		results[i] = make(chan string, 1)
		go func() {
			defer r.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				b = append(b, "\nerror: "+err.Error()...)
			}
			results[i] <- string(b)
		}()
	}
	for range 3 {
		step <- struct{}{}
	}
	eventually(t, "job finished", func() bool { return len(runner.Jobs()) == 0 })
	full, err := runner.ReadLog(id, 0, 0)
	if err != nil || !full.Done {
		t.Fatalf("read log: %+v %v", full, err)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := <-results[i]
			if want := string(full.Data[c.offset:]); got != want || !strings.Contains(got, "line 2\n") {
				t.Errorf("the other engine's follower read %q, want %q", got, want)
			}
		})
	}
}
