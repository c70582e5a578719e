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
// are builders (they may rebuild and cancel), until the test ends.
func Serve(t testing.TB, e *current.Engine, routes []string, h http.Handler) *httptest.Server {
	t.Helper()
	auth, _, err := web.OpenAuth(web.AuthOptions{Dir: filepath.Join(t.TempDir(), "console"), AdminPassword: "pw", Anonymous: web.RoleBuilder})
	if err != nil {
		t.Fatal(err)
	}
	console, err := web.New(web.Options{Engine: web.CurrentEngine{E: e}, Auth: auth})
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

// Chromium starts a headless chromium (the test skips without one) and returns the
// context to drive it with, ending after timeout or with the test.
func Chromium(t testing.TB, timeout time.Duration) context.Context {
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
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, timeout)
	t.Cleanup(cancel)
	return ctx
}
