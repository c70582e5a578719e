package bench

import (
	"bytes"
	"image/png"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

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
