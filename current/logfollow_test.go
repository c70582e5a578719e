package current

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A symbolic link in the place of a job's log is neither read nor written through.
func TestLogSymlinkIsNotFollowed(t *testing.T) {
	e := testEngine(t, Config{MaxRetries: -1})
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
