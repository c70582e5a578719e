package logarchive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func open(t testing.TB, opts Options) *Archive {
	t.Helper()
	a, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func put(t testing.TB, a *Archive, run, key, text string) {
	t.Helper()
	if err := a.Put(context.Background(), run, key, strings.NewReader(text)); err != nil {
		t.Fatal(err)
	}
}

func TestPutRead(t *testing.T) {
	for _, tc := range []struct {
		name      string
		text      string
		max       int64
		want      string
		truncated bool
	}{
		{name: "short", text: "line 1\nline 2\n", max: 100, want: "line 1\nline 2\n"},
		{name: "empty", text: "", max: 100, want: ""},
		{name: "exactly the limit", text: "0123456789", max: 10, want: "0123456789"},
		{name: "one byte over", text: "0123456789x", max: 10, want: "0123456789\n" + TruncationMarker + " at 10 bytes of 11]\n", truncated: true},
		{name: "binary", text: "\x00\xff\x1b[31mred\x1b[0m", max: 100, want: "\x00\xff\x1b[31mred\x1b[0m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := open(t, Options{MaxLogBytes: tc.max, Register: reg})
			put(t, a, "run1", "4.14/foo.1.0", tc.text)
			got, all, err := a.Read("run1", "4.14/foo.1.0", 0)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want || !all {
				t.Errorf("read %q (all %v), want %q", got, all, tc.want)
			}
			m := testenv.Metrics(t, reg)
			if w, tr := m[`kiln_logarchive_logs_written_total{archive=logs}`], m[`kiln_logarchive_logs_truncated_total{archive=logs}`]; w != 1 || (tr == 1) != tc.truncated {
				t.Errorf("written %v truncated %v, want 1 and %v", w, tr, tc.truncated)
			}
		})
	}
}

func TestReadLimit(t *testing.T) {
	a := open(t, Options{})
	put(t, a, "r", "k", "abcdef")
	for _, tc := range []struct {
		name  string
		limit int64
		want  string
		all   bool
	}{
		{name: "below", limit: 3, want: "abc"},
		{name: "at", limit: 6, want: "abcdef", all: true},
		{name: "above", limit: 60, want: "abcdef", all: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, all, err := a.Read("r", "k", tc.limit)
			if err != nil || string(got) != tc.want || all != tc.all {
				t.Errorf("Read(%d) = %q, %v, %v; want %q, %v", tc.limit, got, all, err, tc.want, tc.all)
			}
		})
	}
}

// repeating gives n bytes of a pattern without holding them.
type repeating struct {
	pattern []byte
	n, off  int64
}

func (r *repeating) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.n {
		c := copy(p[n:min(len(p), n+int(r.n-r.off))], r.pattern[r.off%int64(len(r.pattern)):])
		n += c
		r.off += int64(c)
	}
	return n, nil
}

func TestHugeLogIsCappedInBoundedMemory(t *testing.T) {
	testenv.Short(t, "streams 1 GB through the archive")
	const total = 1 << 30
	a := open(t, Options{MaxLogBytes: 4 << 20})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := a.Put(context.Background(), "r", "big", &repeating{pattern: []byte("all work and no play makes a long log\n"), n: total})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("storing a 1 GB log allocated %d MiB", grew>>20)
	}
	got, _, err := a.Read("r", "big", 0)
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("\n%s at %d bytes of %d]\n", TruncationMarker, 4<<20, total)
	if len(got) != 4<<20+len(marker) || !strings.HasSuffix(string(got), marker) {
		t.Errorf("kept %d bytes ending %q, want %d ending with the marker %q", len(got), got[max(0, len(got)-80):], 4<<20+len(marker), marker)
	}
	if st, err := os.Stat(filepath.Join(a.Dir(), "r", "big.zst")); err != nil || st.Size() > 1<<20 {
		t.Errorf("stored file: %v, %v", st, err)
	}
}

func TestPutStopsWithContext(t *testing.T) {
	a := open(t, Options{})
	put(t, a, "r", "k", "first version")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := a.Put(ctx, "r", "k", strings.NewReader("second"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context: %v", err)
	}
	got, _, err := a.Read("r", "k", 0)
	if err != nil || string(got) != "first version" {
		t.Errorf("after an aborted Put the log is %q, %v; want the first version", got, err)
	}
	keys, _ := a.Keys("r", "")
	if !slices.Equal(keys, []string{"k"}) {
		t.Errorf("keys after an aborted Put: %q", keys)
	}
}

func TestBadNames(t *testing.T) {
	a := open(t, Options{})
	for _, tc := range []struct{ name, run, key string }{
		{"dot-dot key", "r", "../x"},
		{"absolute key", "r", "/etc/passwd"},
		{"empty key element", "r", "a//b"},
		{"hidden key", "r", ".tmp-1"},
		{"slash in run", "a/b", "k"},
		{"empty run", "", "k"},
		{"space", "r", "a b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Put(context.Background(), tc.run, tc.key, strings.NewReader("x")); err == nil {
				t.Errorf("Put(%q, %q) was accepted", tc.run, tc.key)
			}
		})
	}
}

func TestCorruptLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"garbage", []byte("this is not zstd at all")},
		{"empty file", nil},
		{"truncated frame", nil}, // filled below: the first half of a real log
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := open(t, Options{Register: reg})
			for _, k := range []string{"s/a", "s/b", "s/c"} {
				put(t, a, "r", k, strings.Repeat("error: boom in "+k+"\n", 500))
			}
			p := filepath.Join(a.Dir(), "r", "s", "b.zst")
			content := tc.content
			if tc.name == "truncated frame" {
				b, _ := os.ReadFile(p)
				content = b[:len(b)/2]
			}
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := a.Read("r", "s/b", 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "s/b") {
				t.Errorf("reading the corrupt log: %v, want ErrCorrupt naming it", err)
			}
			for _, k := range []string{"s/a", "s/c"} {
				if got, _, err := a.Read("r", k, 0); err != nil || !bytes.Contains(got, []byte("boom in "+k)) {
					t.Errorf("log %s beside the corrupt one: %v", k, err)
				}
			}
			res, err := a.Search(context.Background(), "r", "", regexp.MustCompile(`boom`))
			if err != nil {
				t.Fatal(err)
			}
			if keys := matchKeys(res); !slices.Equal(keys, []string{"s/a", "s/c"}) {
				t.Errorf("search matched %q, want s/a and s/c", keys)
			}
			if len(res.Unreadable) != 1 || res.Unreadable[0].Key != "s/b" {
				t.Errorf("unreadable: %+v, want s/b", res.Unreadable)
			}
			if n := testenv.Metrics(t, reg)[`kiln_logarchive_logs_corrupt_total{archive=logs}`]; n < 2 {
				t.Errorf("corrupt logs counted %v, want at least 2 (read and search)", n)
			}
		})
	}
}

func matchKeys(res *SearchResult) []string {
	var keys []string
	for _, m := range res.Matches {
		keys = append(keys, m.Key)
	}
	return keys
}

func TestSearch(t *testing.T) {
	a := open(t, Options{})
	logs := map[string]string{
		"4.14/foo.1.0":   "#=== ERROR while compiling foo.1.0 ===#\nFile \"src/a.ml\", line 3:\nError: Unbound module Str\n",
		"4.14/bar.2.0":   "Done: 12/12\n-> installed bar.2.0\n",
		"5.3/foo.1.0":    "-> installed foo.1.0\n",
		"5.3/baz.0.1":    "Error: Unbound value List.is_empty\n",
		"5.3-dune/foo.1": "Error: Unbound module Str\n",
	}
	for k, v := range logs {
		put(t, a, "run", k, v)
	}
	for _, tc := range []struct {
		name, prefix, re string
		want             []Match
	}{
		{name: "one switch", prefix: "4.14/", re: `Unbound module`, want: []Match{{Key: "4.14/foo.1.0", Line: 3, Text: "Error: Unbound module Str"}}},
		{name: "whole run", prefix: "", re: `Unbound module \w+`, want: []Match{
			{Key: "4.14/foo.1.0", Line: 3, Text: "Error: Unbound module Str"},
			{Key: "5.3-dune/foo.1", Line: 1, Text: "Error: Unbound module Str"}}},
		{name: "prefix is not a directory", prefix: "5.3", re: `^Error`, want: []Match{
			{Key: "5.3-dune/foo.1", Line: 1, Text: "Error: Unbound module Str"},
			{Key: "5.3/baz.0.1", Line: 1, Text: "Error: Unbound value List.is_empty"}}},
		{name: "line anchors", prefix: "", re: `(?m)^-> installed foo`, want: []Match{{Key: "5.3/foo.1.0", Line: 1, Text: "-> installed foo.1.0"}}},
		{name: "no match", prefix: "", re: `segfault`},
		{name: "unknown switch", prefix: "4.02/", re: `.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Search(context.Background(), "run", tc.prefix, regexp.MustCompile(tc.re))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Matches, tc.want) {
				t.Errorf("matches %+v, want %+v", res.Matches, tc.want)
			}
		})
	}
	if _, err := a.Search(context.Background(), "nope", "", regexp.MustCompile(`x`)); !errors.Is(err, ErrNotFound) {
		t.Errorf("search of an unknown run: %v", err)
	}
}

func TestSearchLongLine(t *testing.T) {
	a := open(t, Options{})
	put(t, a, "r", "k", strings.Repeat("x", 5000)+"NEEDLE"+strings.Repeat("y", 5000)+"\n")
	res, err := a.Search(context.Background(), "r", "", regexp.MustCompile(`NEEDLE`))
	if err != nil || len(res.Matches) != 1 {
		t.Fatalf("search: %+v, %v", res, err)
	}
	if m := res.Matches[0]; !strings.Contains(m.Text, "NEEDLE") || len(m.Text) > maxMatchText {
		t.Errorf("match text %q (%d bytes) should hold the match in at most %d bytes", m.Text, len(m.Text), maxMatchText)
	}
}

func TestSearchStopsWithContext(t *testing.T) {
	a := open(t, Options{})
	for i := range 50 {
		put(t, a, "r", fmt.Sprintf("k%d", i), "text")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Search(ctx, "r", "", regexp.MustCompile(`text`)); !errors.Is(err, context.Canceled) {
		t.Errorf("search with a cancelled context: %v", err)
	}
}

func TestPrune(t *testing.T) {
	day := 24 * time.Hour
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		r    Retention
		want []string // removed, newest first
	}{
		{name: "nothing set", r: Retention{}},
		{name: "max runs", r: Retention{MaxRuns: 2}, want: []string{"r2", "r1"}},
		{name: "max age", r: Retention{MaxAge: 3*day + time.Hour}, want: []string{"r1"}},
		{name: "both", r: Retention{MaxAge: 3*day + time.Hour, MaxRuns: 3}, want: []string{"r1"}},
		{name: "keep", r: Retention{MaxRuns: 1, Keep: []string{"r2"}}, want: []string{"r3", "r1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start
			a := open(t, Options{Now: func() time.Time { return now }})
			for i := 1; i <= 4; i++ {
				put(t, a, fmt.Sprintf("r%d", i), "k", "log")
				now = now.Add(day)
			}
			removed, err := a.Prune(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(removed, tc.want) {
				t.Errorf("removed %q, want %q", removed, tc.want)
			}
			runs, _ := a.Runs()
			for _, r := range runs {
				if slices.Contains(tc.want, r.Name) {
					t.Errorf("run %s still listed", r.Name)
				}
			}
			if len(runs)+len(tc.want) != 4 {
				t.Errorf("%d runs left, want %d", len(runs), 4-len(tc.want))
			}
		})
	}
}

func TestRunsOrder(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := open(t, Options{Now: func() time.Time { return now }})
	for _, r := range []string{"b", "c", "a"} {
		if err := a.Begin(r); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	os.WriteFile(filepath.Join(a.Dir(), "c", createdFile), []byte("garbage"), 0o644)
	os.Chtimes(filepath.Join(a.Dir(), "c"), now.Add(-time.Hour), now.Add(-time.Hour))
	runs, err := a.Runs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("runs %q, want the newest first with c dated by its directory", names)
	}
}

func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"4.14/foo.1.0", "../x", "a//b", ".x", "a/./b", "x\x00"} {
		f.Add(s)
	}
	a, err := Open(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := a.logPath("run", key)
		if err != nil {
			return
		}
		rel, err := filepath.Rel(filepath.Join(a.Dir(), "run"), p)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.ToSlash(rel) != key+ext {
			t.Errorf("key %q accepted but stored at %q", key, p)
		}
	})
}

func FuzzReadStored(f *testing.F) {
	a, err := Open(f.TempDir(), Options{MaxLogBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	put(f, a, "seed", "k", "a real log\n")
	seed, _ := os.ReadFile(filepath.Join(a.Dir(), "seed", "k.zst"))
	f.Add(seed)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stored []byte) {
		if err := os.MkdirAll(filepath.Join(a.Dir(), "f"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(a.Dir(), "f", "k.zst"), stored, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Read("f", "k", 2<<20); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("reading stored bytes: %v, want nil or ErrCorrupt", err)
		}
		res, err := a.Search(context.Background(), "f", "", regexp.MustCompile(`x`))
		if err != nil {
			t.Fatalf("search: %v", err)
		}
		if len(res.Matches)+len(res.Unreadable) > 1 {
			t.Errorf("one log gave %+v", res)
		}
	})
}

func FuzzParseStamp(f *testing.F) {
	f.Add([]byte("2026-01-01T00:00:00Z\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tm, err := ParseStamp(b)
		if err == nil {
			if again, err := ParseStamp([]byte(tm.Format(time.RFC3339Nano))); err != nil || !again.Equal(tm) {
				t.Errorf("stamp %q read as %v does not read back: %v", b, tm, err)
			}
		}
	})
}

func TestSearchTellsUnreadableFromCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name       string
		target     func(dir string) string // what s/b.zst links to
		unreadable bool
	}{
		{name: "gone meanwhile", target: func(dir string) string { return filepath.Join(dir, "nowhere") }},
		{name: "not a file", target: func(dir string) string { return dir }, unreadable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := open(t, Options{Register: reg})
			put(t, a, "r", "s/a", "boom\n")
			if err := os.Symlink(tc.target(a.Dir()), filepath.Join(a.Dir(), "r", "s", "b.zst")); err != nil {
				t.Fatal(err)
			}
			res, err := a.Search(context.Background(), "r", "", regexp.MustCompile(`boom`))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(matchKeys(res), []string{"s/a"}) {
				t.Errorf("matches %q", matchKeys(res))
			}
			if got := len(res.Unreadable) == 1; got != tc.unreadable {
				t.Fatalf("unreadable %+v, want listed: %v", res.Unreadable, tc.unreadable)
			}
			if tc.unreadable && (strings.Contains(res.Unreadable[0].Err, "corrupt") || !strings.Contains(res.Unreadable[0].Err, "s/b")) {
				t.Errorf("unreadable log said %q: want it named, not called corrupt", res.Unreadable[0].Err)
			}
			if n := testenv.Metrics(t, reg)[`kiln_logarchive_logs_corrupt_total{archive=logs}`]; n != 0 {
				t.Errorf("%v corrupt logs counted, want none", n)
			}
		})
	}
}
