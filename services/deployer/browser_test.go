package deployer

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
)

// browseStatus reads the status page in Debian's chromium as a user does, then, as an
// admin, rolls production back to the digest that was live before the last rollback
// (v2) with the button on its history line.
func browseStatus(t *testing.T, w *world, liveDigest string) {
	e, err := current.Open(current.Config{StateDir: filepath.Join(t.TempDir(), "engine")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	srv := browsertest.Serve(t, e, []string{"/deployer", "/deployer/"}, routesMux(w.d))
	ctx := browsertest.Chromium(t, 2*time.Minute)
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, ctx, sel) }
	prod := `#service-web tr.stage[data-stage="production"]`
	browsertest.Step(t, ctx, "open the status page", chromedp.Navigate(srv.URL+"/deployer"), chromedp.WaitVisible(chromedp.CSS(prod)))
	if s := text(prod + ` .digest`); s != liveDigest {
		t.Errorf("production's live digest shows %q, want %q", s, liveDigest)
	}
	if s := text(prod + ` .health`); !strings.Contains(s, "healthy") {
		t.Errorf("production's health shows %q", s)
	}
	if s := text(`#service-web .last-failure`); !strings.Contains(s, "rolled-back") || !strings.Contains(s, "broken on purpose") {
		t.Errorf("the last failure shows %q", s)
	}
	if s := text(`#service-web table.refs`); !strings.Contains(s, "refs/heads/feature") || !strings.Contains(s, "passed") {
		t.Errorf("the refs show %q", s)
	}
	// The newest replaced production record is v2, live before the admin's rollback.
	replaced := `#service-web tr.record[data-outcome="replaced"]`
	v2 := text(replaced + ` td:nth-child(5)`)
	browsertest.Step(t, ctx, "roll back to "+v2+" with the button",
		chromedp.SendKeys(chromedp.CSS(replaced+` input[name="token"]`), w.token),
		chromedp.Click(chromedp.CSS(replaced+` button`)))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(prod+` .digest`)))
		if s == v2 {
			break
		}
		if msg, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#admin-result`))); strings.HasPrefix(msg, "failed") || time.Now().After(deadline) {
			t.Fatalf("after the rollback button production shows %q; the page says %q", s, msg)
		}
		time.Sleep(300 * time.Millisecond)
	}
	w.serves(t, w.production, "v2")
}
