package bench

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"math"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
)

// seriesPixels counts the pixels of a PNG drawn in the first series' colour (#1f6fd1).
func seriesPixels(t *testing.T, shot []byte) int {
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if math.Abs(float64(r>>8)-0x1f) < 24 && math.Abs(float64(g>>8)-0x6f) < 24 && math.Abs(float64(bl>>8)-0xd1) < 24 {
				n++
			}
		}
	}
	return n
}

// TestBrowser draws the charts in Debian's chromium: the series are drawn, a range
// chosen by dragging is kept in the URL and restored on reload, and the PR page's
// table shows the significant change.
func TestBrowser(t *testing.T) {
	s := newTestService(t)
	seedHistory(t, s)
	ctx := browsertest.Chromium(t, 3*time.Minute, chromedp.EmulateViewport(1200, 900))
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, what, actions...)
	}
	branch := s.srv.URL + "/bench/r/gitea/o/lib"
	step("open the branch page", chromedp.Navigate(branch), chromedp.WaitVisible(chromedp.CSS(`#charts[data-drawn="2"] .chart canvas`)))
	t.Run("a chart renders its series", func(t *testing.T) {
		shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		n := seriesPixels(t, shot)
		if n < 100 {
			t.Errorf("%d pixels of the series' colour in the screenshot: nothing drawn", n)
		}
		t.Logf("%d pixels of the series' colour", n)
	})
	t.Run("a range chosen survives a reload", func(t *testing.T) {
		box, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => { const r = window.kilnBenchPlots[0].over.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`))
		if err != nil {
			t.Fatal(err)
		}
		y := box[1] + box[3]/2
		x1, x2 := box[0]+box[2]*0.3, box[0]+box[2]*0.8
		step("drag across the first chart",
			chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x1, y, chromedp.ButtonLeft),
			chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, (x1+x2)/2, y, chromedp.ButtonLeft),
			chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x2, y, chromedp.ButtonLeft),
			chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x2, y, chromedp.ButtonLeft))
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(loc)
		from, err1 := strconv.ParseFloat(u.Query().Get("from"), 64)
		to, err2 := strconv.ParseFloat(u.Query().Get("to"), 64)
		if err1 != nil || err2 != nil || to <= from {
			t.Fatalf("after the drag the address is %s", loc)
		}
		step("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#charts[data-drawn] .chart canvas`)))
		after, _ := chromedp.Run(ctx, chromedp.Location())
		scale, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`[window.kilnBenchPlots[0].scales.x.min, window.kilnBenchPlots[0].scales.x.max]`))
		if err != nil {
			t.Fatal(err)
		}
		if after != loc || math.Abs(scale[0]-from) > 1 || math.Abs(scale[1]-to) > 1 {
			t.Errorf("after reload: address %s (was %s), chart range %v, want [%v %v]", after, loc, scale, from, to)
		}
	})
	t.Run("the PR table shows the significant change", func(t *testing.T) {
		step("open the PR page", chromedp.Navigate(s.srv.URL+"/bench/r/gitea/o/lib/pr/4"), chromedp.WaitVisible(chromedp.CSS(`#comparison`)))
		rows := map[string]string{}
		for _, m := range []string{"suite/sort/time", "suite/sort/gc/alloc"} {
			rows[m] = browsertest.Text(t, ctx, `#comparison tr[data-metric="`+m+`"]`)
		}
		if !strings.Contains(rows["suite/sort/time"], "regression") || !strings.Contains(rows["suite/sort/time"], "+30") {
			t.Errorf("time row %q", rows["suite/sort/time"])
		}
		if !strings.Contains(rows["suite/sort/gc/alloc"], "no significant change") {
			t.Errorf("alloc row %q", rows["suite/sort/gc/alloc"])
		}
	})
}

// TestBrowserLogLines benchmarks two commits of main and a pull request interleaved
// with its base as engine jobs, then clicks a chart's point and the PR table's values:
// each lands on the console's page of the job's log, on the line that printed the
// metric, highlighted.
func TestBrowserLogLines(t *testing.T) {
	testenv.RequireCommand(t, "sh")
	ctx, cancel := context.WithCancel(context.Background())
	eng, err := current.Open(current.Config{StateDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api, err := NewAPI(API{Store: st, Logger: quiet}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ui, err := NewUI(st, quiet, detect.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{API: api, Runner: HostRunner{}, Logs: eng}
	type task struct {
		Run store.Run
		Job Job
	}
	op := &current.Op[task, int64]{
		Name: "bench-run",
		Key:  func(b task) string { return b.Run.Commit },
		Run: func(ctx context.Context, j *current.Job, b task) (int64, error) {
			b.Run.Job = j.ID()
			j.Logf("benchmarking %s", b.Run.Commit)
			_, resp, err := p.benchmark(ctx, j, b.Run, b.Job, "bench")
			if err != nil {
				return 0, err
			}
			return resp.Run, nil
		},
	}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	run := func(commit, speed string, at int, pr *Job) current.AnyTerm {
		b := task{Run: store.Run{Repo: "gitea/o/lib", Branch: "main", Commit: commit, CommitTime: t0.Add(time.Duration(at) * time.Hour)},
			Job: Job{Dir: checkout(t, speed), Command: "sh bench.sh", Repeats: 3}}
		if pr != nil {
			b.Run.Branch, b.Run.PR, b.Run.Base, b.Job.BaseDir = "", 4, "m2", pr.Dir
		}
		return current.Do(op, current.Return(b))
	}
	pipeline := current.All(run("m1", "100", 1, nil), run("m2", "101", 2, nil), run("p1", "130", 3, &Job{Dir: checkout(t, "100")}))
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, pipeline) }()
	t.Cleanup(func() { cancel(); <-done; eng.Close() })
	var runs []store.Run
	for deadline := time.Now().Add(2 * time.Minute); len(runs) < 3; time.Sleep(50 * time.Millisecond) {
		if runs, err = st.Runs(ctx, store.Filter{Repo: "gitea/o/lib", State: store.Passed}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d passed runs, want 3", len(runs))
		}
	}

	srv := browsertest.Serve(t, eng, ui.Routes(), ui)
	bctx := browsertest.Chromium(t, 3*time.Minute, chromedp.EmulateViewport(1200, 900))
	// landed checks that the browser shows the job log line that printed the head's or
	// the base's (arm) time in run, highlighted, and that it printed want.
	landed := func(t *testing.T, run store.Run, arm store.Arm, want string) {
		t.Helper()
		pts, err := st.RunPoints(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		line := 0
		for _, p := range pts {
			if p.Name == "time" && p.Arm == arm && len(p.LogLines) > 0 {
				line = p.LogLines[0].First
			}
		}
		browsertest.Step(t, bctx, "wait for the highlighted log line", chromedp.WaitVisible(chromedp.CSS(`pre.log .line:target`)))
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		if wantLoc := fmt.Sprintf("%s/job/%s#L%d", srv.URL, run.Job, line); line == 0 || loc != wantLoc {
			t.Errorf("landed on %s, want %s", loc, wantLoc)
		}
		text := browsertest.Text(t, bctx, `pre.log .line:target`)
		if !strings.Contains(text, `"name": "time", "value": `+want) {
			t.Errorf("the highlighted line is %q, not the one that printed time %s", text, want)
		}
	}
	t.Run("a chart's point opens the log line that printed it", func(t *testing.T) {
		browsertest.Step(t, bctx, "open the branch page", chromedp.Navigate(srv.URL+"/bench/r/gitea/o/lib"),
			chromedp.WaitVisible(chromedp.CSS(`#charts[data-drawn="2"] .chart canvas`)))
		xy, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`(() => {
			const u = window.kilnBenchPlots.find(p => p.root.parentNode.dataset.title === "b t time");
			const r = u.over.getBoundingClientRect();
			// m2's point is at the right edge: a few pixels inside it still picks it.
			return [r.left + u.valToPos(u.data[0][1], "x") - 4, r.top + u.valToPos(u.data[1][1], "y")];
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		browsertest.Step(t, bctx, "click m2's point of the time chart",
			chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, xy[0], xy[1]),
			chromedp.MouseClickXY(xy[0], xy[1]))
		landed(t, runs[1], store.Head, "101")
	})
	for _, c := range []struct {
		name, cell string
		arm        store.Arm
		want       string
	}{
		{"the PR table's value opens the PR's log line", "2", store.Head, "130"},
		{"the PR table's base opens the base's log line", "3", store.Base, "100"},
	} {
		t.Run(c.name, func(t *testing.T) {
			browsertest.Step(t, bctx, "open the PR page and click the value",
				chromedp.Navigate(srv.URL+"/bench/r/gitea/o/lib/pr/4"),
				chromedp.Click(chromedp.CSS(`#comparison tr[data-metric="b/t/time"] td:nth-child(`+c.cell+`) a.log`)))
			landed(t, runs[2], c.arm, c.want)
		})
	}
}
