// Package browsertest runs a service's pages beside the console and a headless
// Debian chromium to browse them, for the services' browser tests.
package browsertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/web"
)

// Serve serves h at each of routes beside the console of e, where anonymous users
// are builders (they may rebuild and cancel), with links in the console's menu, until
// the test ends.
func Serve(t testing.TB, e *current.Engine, routes []string, h http.Handler, links ...web.Link) *httptest.Server {
	t.Helper()
	auth, _, err := web.OpenAuth(web.AuthOptions{Dir: filepath.Join(t.TempDir(), "console"), AdminPassword: "pw", Anonymous: web.RoleBuilder})
	if err != nil {
		t.Fatal(err)
	}
	console, err := web.New(web.Options{Engine: web.CurrentEngine{E: e}, Auth: auth, Links: links})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r, h)
	}
	mux.Handle("/", console)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// Chromium starts a headless chromium (the test skips without one), runs setup in it
// (a viewport, say) and returns the context to drive it with, ending after timeout or
// with the test.
func Chromium(t testing.TB, timeout time.Duration, setup ...chromedp.Action[chromedp.Void]) context.Context {
	t.Helper()
	chromium := testenv.RequireCommand(t, "chromium")
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancelAlloc)
	bctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(cancelCtx)
	if err := chromedp.Do(bctx, setup...); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, timeout)
	t.Cleanup(cancel)
	return ctx
}

// Step runs actions in the browser of ctx, failing the test with what it was doing.
func Step(t testing.TB, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Text is the text content of the element sel finds.
func Text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}
