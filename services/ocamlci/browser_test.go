package ocamlci

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/services/internal/browsertest"
)

// browseAndRebuild walks the public UI in Debian's chromium as a user does, from the
// owner's page to a variant's log, then presses Rebuild on its job page and sees the
// new job.
func browseAndRebuild(t *testing.T, h *ciHarness, commit, variant string) {
	b := newBrowser(t, h)
	ctx := b.ctx
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, what, actions...)
	}
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, ctx, sel) }

	step("open the owner's page", chromedp.Navigate(b.url+"/"+h.repo.Forge+"/"+h.repo.Owner),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/`+h.repo.Forge+`/`+h.repo.Owner+`/`+h.repo.Name+`"]`)))
	step("open the repository", chromedp.Click(chromedp.CSS(`a[href="/`+h.repo.Forge+`/`+h.repo.Owner+`/`+h.repo.Name+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.refs a.commit`)))
	if s := text(`table.refs`); !strings.Contains(s, "main") || !strings.Contains(s, "passed") {
		t.Fatalf("repository page lists %q", s)
	}
	step("open the commit", chromedp.Click(chromedp.CSS(`table.refs a.commit`)), chromedp.WaitVisible(chromedp.CSS(`table.variants`)))
	if s := text(`table.variants`); !strings.Contains(s, variant) {
		t.Fatalf("commit page lists %q, not %s", s, variant)
	}
	step("open the variant", chromedp.Click(chromedp.CSS(`a.variant[href$="/variant/`+variant+`"]`)), chromedp.WaitVisible(chromedp.CSS(`pre.log`)))
	if s := text(`pre.log`); !strings.Contains(s, "FROM ") || !strings.Contains(s, "test passed") {
		t.Fatalf("variant log shows %q", s)
	}
	v, _ := h.svc.Index.Variant(context.Background(), h.repo, commit, variant)
	step("open the job", chromedp.Click(chromedp.CSS(`a.job-link`)), chromedp.WaitVisible(chromedp.CSS(`#rebuild`)))
	step("press Rebuild", chromedp.Click(chromedp.CSS(`#rebuild`)))
	deadline := time.Now().Add(time.Minute)
	for {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err == nil && strings.Contains(loc, "/job/") && !strings.HasSuffix(loc, "/job/"+v.JobID) && !strings.Contains(loc, "/rebuild") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Rebuild the browser is at %s (err %v), not at a new job", loc, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	nv, _ := h.svc.Index.Variant(context.Background(), h.repo, commit, variant)
	deadline = time.Now().Add(time.Minute)
	for nv == nil || nv.JobID == v.JobID {
		if time.Now().After(deadline) {
			t.Fatalf("the rebuild did not start a new job of %s: %+v", variant, nv)
		}
		time.Sleep(200 * time.Millisecond)
		nv, _ = h.svc.Index.Variant(context.Background(), h.repo, commit, variant)
	}
}
