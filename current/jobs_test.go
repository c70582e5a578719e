package current

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConfirmationAndAutoRelease(t *testing.T) {
	e := testEngine(t, Config{ConfirmLevel: LevelAverage})
	var runs sync32
	mk := func(name string, l Level) *Op[string, string] {
		return &Op[string, string]{Name: name, Level: l, Run: func(ctx context.Context, j *Job, in string) (string, error) {
			runs.inc(name)
			return in, nil
		}}
	}
	root := All(Do(mk("harmless", LevelHarmless), Return("a")), Do(mk("average", LevelAverage), Return("b")),
		Do(mk("risky", LevelAboveAverage), Return("c")), Do(mk("danger", LevelDangerous), Return("d")))
	running(t, e, root)
	eventually(t, "low levels ran", func() bool { return runs.get("harmless") == 1 && runs.get("average") == 1 })
	eventually(t, "two held", func() bool {
		js := e.Jobs()
		return len(js) == 2 && js[0].State == JobWaiting && js[1].State == JobWaiting
	})
	js := e.Jobs()
	if !strings.Contains(js[0].WaitReason, "confirmation") || !strings.Contains(js[0].WaitReason, "average") {
		t.Fatalf("reason: %q", js[0].WaitReason)
	}
	n, _ := nodeByLabel(e, "danger")
	if n.State != StateActive || n.Active != ActiveWaitingForConfirmation {
		t.Fatalf("danger node: %+v", n)
	}
	if runs.get("risky") != 0 || runs.get("danger") != 0 {
		t.Fatalf("held jobs ran: %v", runs.snapshot())
	}
	// Raising the level releases the above-average job only.
	if err := e.SetConfirmLevel(LevelAboveAverage); err != nil {
		t.Fatal(err)
	}
	eventually(t, "risky released", func() bool { return runs.get("risky") == 1 })
	time.Sleep(50 * time.Millisecond)
	if runs.get("danger") != 0 {
		t.Fatal("danger ran without confirmation")
	}
	// Explicit confirmation.
	js = e.Jobs()
	if len(js) != 1 {
		t.Fatalf("jobs %+v", js)
	}
	if err := e.Confirm(js[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "danger confirmed", func() bool { return runs.get("danger") == 1 })

	// Auto-release after start-up, visible in Status.
	e2 := testEngine(t, Config{ConfirmLevel: LevelHarmless, AutoRelease: 300 * time.Millisecond})
	st := e2.Status()
	if st.AutoReleaseAt.IsZero() || st.AutoReleased || st.ConfirmLevel != LevelHarmless {
		t.Fatalf("status before: %+v", st)
	}
	var ran atomic.Bool
	op := &Op[string, string]{Name: "deploy", Level: LevelDangerous, Run: func(ctx context.Context, j *Job, in string) (string, error) {
		ran.Store(true)
		return in, nil
	}}
	running(t, e2, Do(op, Return("x")))
	eventually(t, "held", func() bool { js := e2.Jobs(); return len(js) == 1 && js[0].State == JobWaiting })
	eventually(t, "auto-released", func() bool { return ran.Load() })
	st = e2.Status()
	if !st.AutoReleased || st.ConfirmLevel != LevelDangerous {
		t.Fatalf("status after: %+v", st)
	}
}

func TestPoolLanes(t *testing.T) {
	e := testEngine(t, Config{Pools: map[string]int{"one": 1}})
	release := make(chan struct{})
	var order []string
	orderCh := make(chan string, 10)
	op := &Op[string, string]{Name: "job", Pool: "one", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		orderCh <- in
		if in == "blocker" {
			<-release
		}
		return in, nil
	}}
	// A background job: "old" has a previous result that we ask to rebuild.
	old := NewVar("old", "old")
	items := NewVar("items", []string{})
	root := All(Do(op, old.Term()), ListMap(items.Term(), func(s string) string { return s }, func(s Term[string]) Term[string] { return Do(op, s) }))
	running(t, e, root)
	order = append(order, <-orderCh)
	eventually(t, "old done", func() bool { r, _ := e.Query(Query{KeyContains: `"old"`}); return len(r) == 1 && r[0].State == JobOK })
	items.Set([]string{"blocker"})
	order = append(order, <-orderCh)
	if order[0] != "old" || order[1] != "blocker" {
		t.Fatalf("order %v", order)
	}
	// blocker holds the only slot. Queue a background rebuild of old, then an urgent new item.
	r, _ := e.Query(Query{KeyContains: `"old"`})
	if _, err := e.Rebuild(r[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "background queued", func() bool {
		for _, j := range e.Jobs() {
			if j.Lane == LaneBackground && strings.Contains(j.WaitReason, "pool one full") {
				return true
			}
		}
		return false
	})
	items.Set([]string{"blocker", "new"})
	eventually(t, "urgent queued", func() bool {
		for _, j := range e.Jobs() {
			if j.Lane == LaneUrgent && strings.Contains(j.WaitReason, "urgent lane position 1") {
				return true
			}
		}
		return false
	})
	for _, j := range e.Jobs() {
		if j.Lane == LaneBackground && !strings.Contains(j.WaitReason, "behind 1 urgent") {
			t.Fatalf("background reason: %q", j.WaitReason)
		}
	}
	close(release)
	a, b := <-orderCh, <-orderCh
	if a != "new" || b != "old" {
		t.Fatalf("after the blocker ran %s then %s; want the urgent new before the background old", a, b)
	}
}

func TestStartNowAndCancel(t *testing.T) {
	e := testEngine(t, Config{Pools: map[string]int{"p": 1}, ConfirmLevel: LevelHarmless})
	op := &Op[string, string]{Name: "sleep", Pool: "p", Level: LevelAverage, Run: func(ctx context.Context, j *Job, in string) (string, error) {
		j.Logf("start %s", in)
		c := j.Command(ctx, "sh", "-c", "sleep 60 & echo child $!; sleep 60; echo never")
		return "", c.Run()
	}}
	running(t, e, All(Do(op, Return("a")), Do(op, Return("b"))))
	eventually(t, "both held", func() bool { return len(e.Jobs()) == 2 && e.Jobs()[1].State == JobWaiting })
	for _, j := range e.Jobs() {
		if err := e.StartNow(j.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Start now ignores confirmation and the pool's single slot.
	eventually(t, "both running", func() bool {
		js := e.Jobs()
		return len(js) == 2 && js[0].State == JobRunning && js[1].State == JobRunning
	})
	id := e.Jobs()[0].ID
	var child int
	eventually(t, "command started", func() bool {
		c, _ := e.ReadLog(id, 0, 0)
		_, after, ok := strings.Cut(string(c.Data), "child ")
		if ok {
			fmt.Sscan(after, &child)
		}
		return child > 0
	})
	if err := e.Cancel(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cancelled", func() bool {
		d, _ := e.Job(id)
		return d.State == JobFailed
	})
	// The background child of the shell died with it.
	eventually(t, "child process killed", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			return true
		}
		f := strings.Fields(string(b))
		return len(f) > 2 && (f[2] == "Z" || f[2] == "X")
	})
	d, _ := e.Job(id)
	if d.FailureKind != FailCancelled || d.Message != "cancelled by an operator" {
		t.Fatalf("cancelled job: %+v", d)
	}
	if err := e.Cancel(id); !errors.Is(err, ErrNotActive) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestLogRules(t *testing.T) { eachBackend(t, testLogRules) }

func testLogRules(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	if _, err := e.AddLogRule("(unclosed", "x"); err == nil || !strings.Contains(err.Error(), "pattern") {
		t.Fatalf("bad pattern accepted: %v", err)
	}
	rule, err := e.AddLogRule(`No space left on device`, "The build machine ran out of disk space")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddLogRule(`error: .* not found`, "A dependency is missing"); err != nil {
		t.Fatal(err)
	}
	op := &Op[string, string]{Name: "make", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		j.Logf("compiling %s", in)
		j.Logf("%s", in)
		return "", errors.New("exit status 2")
	}}
	running(t, e, All(Catch(Do(op, Return("write: No space left on device"))), Catch(Do(op, Return("error: libfoo not found"))), Catch(Do(op, Return("segfault")))))
	eventually(t, "three failed", func() bool { r, _ := e.Query(Query{States: []JobState{JobFailed}}); return len(r) == 3 })
	msgs := map[string]string{}
	r, _ := e.Query(Query{States: []JobState{JobFailed}})
	for _, j := range r {
		msgs[j.Label] = j.Message
	}
	if msgs[`"write: No space left on device"`] != "The build machine ran out of disk space" ||
		msgs[`"error: libfoo not found"`] != "A dependency is missing" || msgs[`"segfault"`] != "exit status 2" {
		t.Fatalf("messages: %v", msgs)
	}
	matches, err := e.TestLogRule(`libfoo`, 10)
	if err != nil || len(matches) != 3 {
		t.Fatalf("test rule: %v %v", matches, err)
	}
	hit := 0
	for _, m := range matches {
		if m.Matched {
			hit++
			if !strings.Contains(m.Text, "libfoo") || m.Line == 0 {
				t.Fatalf("match %+v", m)
			}
		}
	}
	if hit != 1 {
		t.Fatalf("pattern matched %d logs, want 1: %+v", hit, matches)
	}
	if err := e.UpdateLogRule(rule.ID, "disk", "Disk"); err != nil {
		t.Fatal(err)
	}
	if err := e.UpdateLogRule(999, "disk", "Disk"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if err := e.DeleteLogRule(rule.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteLogRule(rule.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	rules, _ := e.LogRules()
	if len(rules) != 1 || rules[0].Explanation != "A dependency is missing" {
		t.Fatalf("rules: %+v", rules)
	}
}

func TestRetention(t *testing.T) { eachBackend(t, testRetention) }

func testRetention(t *testing.T, cfg Config) {
	first := cfg
	first.LogMaxBytes, first.RetentionEvery = 3000, time.Hour
	e := testEngine(t, first)
	op := &Op[int, int]{Name: "noisy", Run: func(ctx context.Context, j *Job, in int) (int, error) {
		j.Write([]byte(strings.Repeat("x", 1000)))
		return in, nil
	}}
	items := make([]int, 6)
	for i := range items {
		items[i] = i
	}
	src := NewVar("src", []int{})
	running(t, e, ListMap(src.Term(), func(i int) string { return fmt.Sprint(i) }, func(i Term[int]) Term[int] { return Do(op, i) }))
	for i := range items {
		src.Set(items[:i+1])
		eventually(t, "job done", func() bool { r, _ := e.Query(Query{States: []JobState{JobOK}}); return len(r) == i+1 })
	}
	rep, err := e.EnforceRetention()
	if err != nil {
		t.Fatal(err)
	}
	all, _ := e.Query(Query{})
	var kept int64
	deleted := 0
	for _, j := range all {
		present := false
		if f, err := e.logs.open(mustID(t, j.ID)); err == nil {
			n, _ := f.size()
			present = n > 0
			f.Close()
		}
		if j.LogDeleted {
			deleted++
			if present {
				t.Fatalf("job %s: log marked deleted but present", j.ID)
			}
			if _, err := e.ReadLog(j.ID, 0, 0); err == nil || !strings.Contains(err.Error(), "retention") {
				t.Fatalf("reading a deleted log: %v", err)
			}
		} else {
			kept += j.LogSize
		}
	}
	if kept > 3000 || deleted != rep.Deleted || deleted == 0 {
		t.Fatalf("kept %d bytes, deleted %d (report %+v)", kept, deleted, rep)
	}
	// The oldest went first.
	if !all[len(all)-1].LogDeleted || all[0].LogDeleted {
		t.Fatal("retention did not delete oldest first")
	}

	// Age limit.
	cfg = another(t, cfg)
	cfg.LogMaxAge, cfg.RetentionEvery = time.Millisecond, 20*time.Millisecond
	e2 := testEngine(t, cfg)
	running(t, e2, Do(op, Return(1)))
	eventually(t, "old log deleted by the engine", func() bool {
		r, _ := e2.Query(Query{})
		return len(r) == 1 && r[0].LogDeleted
	})
}

func TestFollowLog(t *testing.T) { eachBackend(t, testFollowLog) }

func testFollowLog(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	step := make(chan struct{})
	op := &Op[string, string]{Name: "talk", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		for i := 0; i < 3; i++ {
			<-step
			j.Logf("line %d", i)
		}
		return "", nil
	}}
	running(t, e, Do(op, Return("x")))
	eventually(t, "job", func() bool { return len(e.Jobs()) == 1 })
	id := e.Jobs()[0].ID
	var readers []io.ReadCloser
	for i := 0; i < 20; i++ {
		r, err := e.FollowLog(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	results := make(chan string, len(readers))
	for _, r := range readers {
		go func(r io.ReadCloser) {
			defer r.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				results <- "error: " + err.Error()
			}
			results <- string(b)
		}(r)
	}
	for i := 0; i < 3; i++ {
		step <- struct{}{}
	}
	for range readers {
		s := <-results
		if !strings.Contains(s, "line 0\nline 1\nline 2\n") || !strings.Contains(s, "succeeded") {
			t.Fatalf("follower got %q", s)
		}
	}
	// From an offset.
	c, err := e.ReadLog(id, 0, 0)
	if err != nil || !c.Done {
		t.Fatal(err)
	}
	off := int64(strings.Index(string(c.Data), "line 1"))
	c2, err := e.ReadLog(id, off, 7)
	if err != nil || string(c2.Data) != "line 1\n" || c2.Next != off+7 || c2.Done {
		t.Fatalf("chunk %+v %v", c2, err)
	}
}

func TestBadInput(t *testing.T) { eachBackend(t, testBadInput) }

func testBadInput(t *testing.T, cfg Config) {
	e := testEngine(t, cfg)
	op := &Op[string, string]{Name: "x", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		j.Logf("hello from %s", in)
		return in, nil
	}}
	running(t, e, Do(op, Return("a")))
	eventually(t, "done", func() bool { r, _ := e.Query(Query{States: []JobState{JobOK}}); return len(r) == 1 })
	before, _ := e.Query(Query{})
	for _, id := range []string{"", "nope", "-1", "0", "999999", "1; DROP TABLE results"} {
		if _, err := e.Job(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Job(%q): %v", id, err)
		}
		if _, err := e.ReadLog(id, 0, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ReadLog(%q): %v", id, err)
		}
		if err := e.Cancel(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Cancel(%q): %v", id, err)
		}
		if _, err := e.Rebuild(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Rebuild(%q): %v", id, err)
		}
		var nf *NotFoundError
		if err := e.StartNow(id); !errors.As(err, &nf) || nf.What != "job" {
			t.Fatalf("StartNow(%q): %v", id, err)
		}
	}
	id := before[0].ID
	if _, err := e.ReadLog(id, 1<<30, 0); err == nil || !strings.Contains(err.Error(), "beyond") {
		t.Fatalf("offset beyond end: %v", err)
	}
	if _, err := e.ReadLog(id, -5, 0); !errors.Is(err, ErrInvalid) {
		t.Fatal("negative offset accepted")
	}
	if _, err := e.Query(Query{States: []JobState{"exploded"}}); !errors.Is(err, ErrInvalid) {
		t.Fatal("unknown state accepted")
	}
	// A corrupt (truncated) log gives a clear error and changes nothing stored.
	_, inFiles := e.logs.(*fileLogs)
	if inFiles {
		if err := os.Truncate(before[0].LogPath, 3); err != nil {
			t.Fatal(err)
		}
	} else if _, err := e.db.db.Exec(`DELETE FROM job_logs WHERE job_id = $1 AND off > 0`, mustID(t, id)); err != nil {
		t.Fatal(err)
	}
	_, err := e.ReadLog(id, 0, 0)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("truncated log: %v", err)
	}
	if _, err := e.FollowLog(context.Background(), id, 0); err == nil {
		t.Fatal("following a truncated log works")
	}
	if inFiles {
		os.Remove(before[0].LogPath)
		os.Mkdir(before[0].LogPath, 0o755)
		if _, err := e.ReadLog(id, 0, 0); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("log replaced by a folder: %v", err)
		}
	}
	after, _ := e.Query(Query{})
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("stored results changed:\n%+v\n%+v", before, after)
	}
	if err := e.SetConfirmLevel(Level(9)); err == nil {
		t.Fatal("level 9 accepted")
	}
	if _, err := ParseLevel("scary"); err == nil {
		t.Fatal("unknown level parsed")
	}
}

func TestMonitorCoalescesAndIsShared(t *testing.T) {
	e := testEngine(t, Config{})
	gate := make(chan struct{})
	var value atomic.Int64
	m := &Monitor[int64]{Name: "counter", Read: func(ctx context.Context) (int64, error) {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return value.Load(), nil
	}}
	var seen atomic.Int64
	a := Map(m.Term(), func(v int64) int64 { seen.Store(v); return v })
	b := Map(m.Term(), func(v int64) int64 { return v })
	stop := NewVar("on", true)
	root := Bind(stop.Term(), func(on bool) Term[Unit] {
		if !on {
			return Return(Unit{})
		}
		return All(a, b)
	})
	running(t, e, root)
	value.Store(1)
	gate <- struct{}{} // first read
	eventually(t, "first read done", func() bool {
		m.core.mu.Lock()
		defer m.core.mu.Unlock()
		return seen.Load() == 1 && !m.core.reading
	})
	value.Store(7)
	for i := 0; i < 50; i++ {
		m.Refresh()
	}
	// The first refresh started a read; the 49 others, arriving while it ran, make one more.
	go func() {
		for seen.Load() != 7 || m.Reads() < 3 {
			select {
			case gate <- struct{}{}:
			case <-time.After(time.Millisecond):
			}
		}
	}()
	eventually(t, "value", func() bool { return seen.Load() == 7 })
	time.Sleep(50 * time.Millisecond)
	if m.Reads() != 3 {
		t.Fatalf("reads = %d, want 3", m.Reads())
	}
	stop.Set(false)
	eventually(t, "monitor stopped", func() bool {
		m.core.mu.Lock()
		defer m.core.mu.Unlock()
		return m.core.refs == 0
	})
}

func TestLiveLogTailMatchesStore(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			store := testLogStore(t, b)
			l, err := openLiveLog(store, 1)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			followers := make([]*logFollower, 4)
			for i := range followers {
				f, err := store.open(1)
				if err != nil {
					t.Fatal(err)
				}
				followers[i] = &logFollower{ctx: context.Background(), f: f, where: store.where(1), live: l}
			}
			got := make([][]byte, len(followers))
			errs := make([]error, len(followers))
			doneReading := make(chan int)
			for i, f := range followers {
				go func(i int, f *logFollower) {
					buf := make([]byte, 1+i*7919)
					for {
						n, err := f.Read(buf)
						got[i] = append(got[i], buf[:n]...)
						if err != nil {
							errs[i] = err
							doneReading <- i
							return
						}
					}
				}(i, f)
			}
			sizes := []int{1, 10, 1000, 70000, 200000, 3, 150000, 5}
			for k := 0; k < 40; k++ {
				chunk := []byte(strings.Repeat(string(rune('a'+k%26)), sizes[k%len(sizes)]))
				if _, err := l.Write(chunk); err != nil {
					t.Fatal(err)
				}
				want = append(want, chunk...)
			}
			l.finish()
			for range followers {
				<-doneReading
			}
			for i := range followers {
				if errs[i] != io.EOF {
					t.Errorf("follower %d ended with %v, want EOF", i, errs[i])
				}
				if string(got[i]) != string(want) {
					t.Fatalf("follower %d read %d bytes differing from the %d written", i, len(got[i]), len(want))
				}
			}
			stored, err := readTail(store, 1)
			if err != nil {
				t.Fatal(err)
			}
			if tail := want[max(0, len(want)-logTail):]; string(stored) != string(tail) {
				t.Errorf("stored tail of %d bytes differs from the %d written last", len(stored), len(tail))
			}
		})
	}
}
