package opamrepoci

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// browsePullRequest walks a pull request's page in Debian's chromium as a user does:
// the summary of errors, the job tree unfolded down to a failing reverse dependency,
// its log, then Rebuild failed, which starts new jobs for the failures.
func browsePullRequest(t *testing.T, e *current.Engine, idx *results.Index, ui *results.UI, page string, repo forge.RepoID, head string) {
	srv := browsertest.Serve(t, e, ui.Routes(), ui)
	ctx := browsertest.Chromium(t, 5*time.Minute)
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, what, actions...)
	}
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, ctx, sel) }
	const failing = "mylib.2,compilers,4.13,revdeps,goodrev.1"
	leaf := `.tree a.variant[href$="/variant/` + failing + `"]`
	step("open the pull request's page", chromedp.Navigate(srv.URL+page), chromedp.WaitVisible(chromedp.CSS(`section.errors`)))
	if s := text(`section.errors`); !strings.Contains(s, failing) || !strings.Contains(s, "new in this PR") {
		t.Fatalf("summary of errors: %q", s)
	}
	for _, node := range []string{"compilers", "4.13", "revdeps"} {
		step("unfold "+node, chromedp.Click(chromedp.Search(`//div[@class="tree"]//details[not(@open)]/summary[starts-with(normalize-space(.), "`+node+` ")]`)))
	}
	step("follow the failing reverse dependency", chromedp.WaitVisible(chromedp.CSS(leaf)), chromedp.Click(chromedp.CSS(leaf)), chromedp.WaitVisible(chromedp.CSS(`pre.log`)))
	if s := text(`pre.log`); !strings.Contains(s, "To reproduce "+failing) || !strings.Contains(s, "goodrev needs mylib 1") {
		t.Fatalf("the variant's log shows %q", s)
	}
	before, _ := idx.Variant(context.Background(), repo, head, failing)
	step("back to the pull request", chromedp.Navigate(srv.URL+page), chromedp.WaitVisible(chromedp.CSS(`#rebuild-failed`)))
	step("press Rebuild failed", chromedp.Click(chromedp.CSS(`#rebuild-failed`)))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#action-result`)))
		if strings.Contains(s, "rebuilding") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Rebuild failed the page says %q", s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		v, _ := idx.Variant(context.Background(), repo, head, failing)
		if v != nil && v.JobID != before.JobID {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Rebuild failed started no new job of %s: %+v", failing, v)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
