package opamref

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// recorded makes a record as an -update run in checkout /src/repo would: two answers,
// one of them a failing lint that names files in the checkout.
func recorded(t *testing.T) string {
	t.Helper()
	a := NewAnswers("2.1.2", "abc123")
	o := &Opam{repoDir: "/src/repo", answers: a, record: true}
	o.remember([]string{"var", "arch"}, []byte("x86_64\n"), 0)
	o.remember([]string{"lint", "/src/repo/packages/a/a.1/opam"},
		[]byte("/src/repo/packages/a/a.1/opam: Errors.\n  error 3: bad\n"), 1)
	file := AnswersFile(t.TempDir(), "2.1.2", "abc123")
	if err := a.Save(file); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestAnswersReplay(t *testing.T) {
	file := recorded(t)
	a, err := LoadAnswers(file, "2.1.2", "abc123")
	if err != nil {
		t.Fatal(err)
	}
	// Replayed in another checkout: paths follow it.
	o := Replay(a, "/elsewhere/checkout")
	tests := []struct {
		name      string
		allowFail bool
		args      []string
		want      string
		err       error // wrapped in the error, when one is expected
		errText   string
	}{
		{name: "plain", args: []string{"var", "arch"}, want: "x86_64\n"},
		{name: "failing answer allowed", allowFail: true,
			args: []string{"lint", "/elsewhere/checkout/packages/a/a.1/opam"},
			want: "/elsewhere/checkout/packages/a/a.1/opam: Errors.\n  error 3: bad\n"},
		{name: "failing answer where success is needed",
			args: []string{"lint", "/elsewhere/checkout/packages/a/a.1/opam"}, errText: "recorded exit status 1"},
		{name: "question not recorded", args: []string{"var", "os"}, err: ErrNotRecorded, errText: "-update"},
		{name: "other file not recorded", allowFail: true,
			args: []string{"lint", "/elsewhere/checkout/packages/b/b.1/opam"}, err: ErrNotRecorded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out []byte
			var err error
			if tc.allowFail {
				out, err = o.QueryAllowFail(context.Background(), tc.args...)
			} else {
				out, err = o.Query(context.Background(), tc.args...)
			}
			if tc.err != nil || tc.errText != "" {
				if err == nil {
					t.Fatalf("got %q, want an error", out)
				}
				if tc.err != nil && !errors.Is(err, tc.err) {
					t.Errorf("error %v does not wrap %v", err, tc.err)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %v does not say %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
		})
	}
	if u := a.Unused(); len(u) != 0 {
		t.Errorf("answers never asked for: %v", u)
	}
	if _, err := o.Run(context.Background(), "", "var", "arch"); err == nil {
		t.Error("Run on a replaying Opam ran something")
	}
}

func TestLoadAnswersChecksKey(t *testing.T) {
	file := recorded(t)
	tests := []struct {
		name, version, commit string
		file                  string
		ok                    bool
	}{
		{name: "same key", version: "2.1.2", commit: "abc123", file: file, ok: true},
		{name: "other opam version", version: "2.1.5", commit: "abc123", file: file},
		{name: "other commit", version: "2.1.2", commit: "def456", file: file},
		{name: "no such file", version: "2.1.2", commit: "abc123", file: filepath.Join(t.TempDir(), "none.json.gz")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := LoadAnswers(tc.file, tc.version, tc.commit)
			if tc.ok != (err == nil) {
				t.Fatalf("LoadAnswers(%s, %s): %v", tc.version, tc.commit, err)
			}
			if tc.ok && a.Len() != 2 {
				t.Errorf("loaded %d answers, want 2", a.Len())
			}
		})
	}
}

func TestAnswersMergeAndUnused(t *testing.T) {
	old, err := LoadAnswers(recorded(t), "2.1.2", "abc123")
	if err != nil {
		t.Fatal(err)
	}
	fresh := NewAnswers("2.1.2", "abc123")
	o := &Opam{answers: fresh, record: true}
	o.remember([]string{"var", "arch"}, []byte("aarch64\n"), 0)
	o.remember([]string{"var", "os"}, []byte("linux\n"), 0)
	fresh.Merge(old)
	if fresh.Len() != 3 {
		t.Fatalf("merged record holds %d answers, want 3", fresh.Len())
	}
	r := Replay(fresh, "")
	out, err := r.Query(context.Background(), "var", "arch")
	if err != nil || string(out) != "aarch64\n" {
		t.Errorf("merge kept the old answer: %q, %v", out, err)
	}
	want := []string{"lint $REPO/packages/a/a.1/opam"} // what this run recorded counts as asked
	if got := fresh.Unused(); !slices.Equal(got, want) {
		t.Errorf("Unused() = %q, want %q", got, want)
	}
}
