package web

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// TestBrowser drives Debian's chromium through the console: the graph, a live log
// followed by server-sent events, and Rebuild.
func TestBrowser(t *testing.T) {
	chromium := testenv.RequireCommand(t, "chromium")
	c := newConsole(t, "alpha", "slow-live")
	c.jobOf("alpha", current.JobOK)
	slowID := c.jobOf("slow-live", current.JobRunning)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, without a timeout
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) int {
		t.Helper()
		n, err := chromedp.Run(tctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return n
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(tctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	base := c.srv.URL

	do("open the graph",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`svg.pipeline`)))
	if n, txt := eval(`document.querySelectorAll("svg.pipeline g.node").length`), text(`svg.pipeline`); n < 3 || !strings.Contains(txt, "build") {
		t.Fatalf("graph has %d nodes, text %q", n, txt)
	}
	if n := eval(`document.querySelectorAll("svg.pipeline g.node.s-running").length`); n != 1 {
		t.Fatalf("%d running nodes in the graph, want 1", n)
	}
	// A new input redraws the open graph, by server-sent events, without a reload.
	do("mark the page", chromedp.Evaluate[chromedp.Void](`window.kilnMark = 1`))
	c.items.Set([]string{"alpha", "slow-live", "delta"})
	c.waitFor("the graph to show the new item", func() bool {
		// The script replaces the drawing: read it in one step in the page.
		s, err := chromedp.Run(tctx, chromedp.Evaluate[string](`(document.querySelector("svg.pipeline") || {}).textContent || ""`))
		return err == nil && strings.Contains(s, "delta")
	})
	if eval(`window.kilnMark || 0`) != 1 {
		t.Fatal("the page reloaded instead of updating the graph")
	}

	do("log in",
		chromedp.Navigate(base+"/login?next=/job/"+slowID),
		chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), testPassword),
		chromedp.Submit(chromedp.CSS(`input[name=password]`)),
		chromedp.WaitVisible(chromedp.ID(`log`)),
		chromedp.WaitVisible(chromedp.ID(`L3`)),
	)
	// Lines written now reach the open page by server-sent events.
	c.lines <- "\x1b[35mlive line one\x1b[0m"
	c.lines <- "live line two"
	do("follow the live log", chromedp.WaitVisible(chromedp.ID(`L5`)))
	line4, line5 := text(`#L4`), text(`#L5`)
	cls, err := chromedp.Run(tctx, chromedp.AttributeValue(chromedp.CSS(`#L4 span`), "class"))
	if err != nil || !strings.Contains(line4, "live line one") || !strings.Contains(line5, "live line two") || cls.Value != "fc5" {
		t.Fatalf("live lines %q %q (class %+v, %v)", line4, line5, cls, err)
	}
	close(c.lines)
	do("see the job finish", chromedp.WaitVisible(chromedp.CSS(`#job-state.s-ok`)))

	do("press Rebuild", chromedp.Click(chromedp.ID(`rebuild`)))
	var loc string
	c.waitFor("the browser to open the new job", func() bool {
		loc, err = chromedp.Run(tctx, chromedp.Location())
		return err == nil && !strings.HasSuffix(loc, "/job/"+slowID)
	})
	do("see the new job finish", chromedp.WaitVisible(chromedp.CSS(`#job-state.s-ok`)))
	newID := loc[strings.LastIndex(loc, "/")+1:]
	if newID == slowID || !strings.Contains(loc, "/job/") {
		t.Fatalf("after Rebuild the browser is at %s", loc)
	}
	j, err := c.eng.Job(newID)
	if err != nil || j.Build != 2 || j.Op != "build" {
		t.Fatalf("new job %s: %+v %v", newID, j, err)
	}
	do("see the new job in the key's history",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.ID(`job-state`)))
	if n := eval(`document.querySelectorAll("table tbody tr.s-ok").length`); n != 2 {
		t.Fatalf("history shows %d finished builds, want 2", n)
	}
}
