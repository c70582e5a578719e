package healthcheck

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
)

// TestBrowser walks the pages in Debian's chromium as a maintainer does: the matrix,
// its filter form, a failing package's log, the diff with the run before, and the
// progress of the run going on, which moves while the page is open.
func TestBrowser(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	e, err := current.Open(current.Config{StateDir: filepath.Join(t.TempDir(), "engine")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	srv := browsertest.Serve(t, e, f.ui.Routes(), f.ui)
	ctx := browsertest.Chromium(t, 2*time.Minute)
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, what, actions...)
	}
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, ctx, sel) }
	rows := func() []string {
		t.Helper()
		names, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#results td.pkg")].map(td => td.textContent)`))
		if err != nil {
			t.Fatalf("rows of the matrix: %v", err)
		}
		return names
	}
	home := srv.URL + fixturePrefix + "/"

	step("open the matrix", chromedp.Navigate(home), chromedp.WaitVisible(chromedp.CSS(`#results`)))
	if got, want := rows(), []string{"a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"}; !slices.Equal(got, want) {
		t.Fatalf("matrix rows %q, want %q", got, want)
	}
	if s := text(`fieldset.about`); !strings.Contains(s, "222222222222") || !strings.Contains(s, "Packages failing with current filters: 1") {
		t.Errorf("about this run: %q", s)
	}

	step("show failures only", chromedp.Click(chromedp.CSS(`input[name="show-failures-only"]`)),
		chromedp.Click(chromedp.CSS(`input[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(`input[name="show-failures-only"][checked]`)))
	if got, want := rows(), []string{"a.2.0", "c.1.0"}; !slices.Equal(got, want) {
		t.Fatalf("failures only: rows %q, want %q", got, want)
	}
	step("and only carol's packages", chromedp.SendKeys(chromedp.CSS(`input[name="maintainers"]`), "carol"),
		chromedp.Click(chromedp.CSS(`input[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(`input[name="maintainers"][value="carol"]`)))
	if got, want := rows(), []string{"c.1.0"}; !slices.Equal(got, want) {
		t.Fatalf("carol's failures: rows %q, want %q", got, want)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	for _, p := range []string{"show-failures-only=true", "maintainers=carol", "show-latest-only=true"} {
		if !strings.Contains(loc, p) {
			t.Errorf("the filtered page's address %q lacks %s", loc, p)
		}
	}

	step("follow c.1.0's failure on 4.14 to its log", chromedp.Click(chromedp.CSS(`#results td.cell-bad a`)), chromedp.WaitVisible(chromedp.CSS(`pre.log`)))
	if s := text(`pre.log`); !strings.Contains(s, "Error: Unbound module Str") {
		t.Fatalf("the log shows %q", s)
	}
	if s := text(`main h2`); !strings.Contains(s, "c.1.0 on 4.14") || !strings.Contains(s, "bad") {
		t.Errorf("the log's heading %q", s)
	}

	step("open the differences", chromedp.Click(chromedp.CSS(`header nav a[href$="/diff"]`)), chromedp.WaitVisible(chromedp.CSS(`#diffs`)),
		chromedp.Click(chromedp.CSS(`#diffs a[href$="/diff/1..2"]`)), chromedp.WaitVisible(chromedp.CSS(`section#now-broken`)))
	if s := text(`section#now-broken`); !strings.Contains(s, "Now broken (2)") || !strings.Contains(s, "c.1.0 on 4.14: good → bad (build)") {
		t.Errorf("now broken: %q", s)
	}
	if s := text(`section#now-fixed`); !strings.Contains(s, "b.1.0 on 5.3: bad → good") {
		t.Errorf("now fixed: %q", s)
	}

	step("back to the matrix", chromedp.Navigate(home), chromedp.WaitVisible(chromedp.CSS(`section.progress[data-run="3"]`)))
	if d, n := text(`section.progress .done`), text(`section.progress .total`); d != "2" || n != "6" {
		t.Fatalf("progress %s / %s, want 2 / 6", d, n)
	}
	if err := f.store.PutResults(context.Background(), []Result{
		{Run: 3, Package: "b.1.0", Switch: "4.14", State: Good}, {Run: 3, Package: "b.1.0", Switch: "5.3", State: Bad}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for text(`section.progress .done`) != "4" {
		if time.Now().After(deadline) {
			t.Fatalf("the open page's progress stayed at %s / 6 after two more results", text(`section.progress .done`))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s := text(`section.progress [data-state="bad"]`); s != "1" {
		t.Errorf("bad results shown as %q, want 1", s)
	}
}
