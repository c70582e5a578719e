package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzPageParams sends arbitrary query strings and paths to the console's pages: each
// answer is a page or a 4xx, never a failure of the server.
func FuzzPageParams(f *testing.F) {
	c := newConsole(f, "alpha", "bad-beta")
	c.jobOf("alpha", "ok")
	c.jobOf("bad-beta", "failed")
	h := c.srv.Config.Handler
	for _, s := range []string{"state=failed", "limit=5&since=24h", "op=build&key=al&latest=true", "kind=work", "expand=g1&expand=g2", "test=semi", "offset=3&max=2", "%zz", "limit=-1"} {
		f.Add("/query", s)
		f.Add("/api/job/1/log", s)
		f.Add("/", s)
	}
	f.Add("/log-rules", "test=(a")
	f.Add("/job/1", "")
	f.Fuzz(func(t *testing.T, path, query string) {
		if len(path) == 0 || path[0] != '/' {
			return
		}
		// Event streams run until the client leaves: this one leaves after a moment.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://console"+path+"?"+query, nil)
		if err != nil {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("GET %s?%s: %d %s", path, query, w.Code, w.Body.String())
		}
	})
}
