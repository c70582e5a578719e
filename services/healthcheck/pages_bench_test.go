package healthcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
)

// fillLarge records a finished run of 4,500 packages on 3 switches with states in the
// proportions of a real run (most good, some not available, a few failures).
func fillLarge(b *testing.B, f *uiFixture) int64 {
	b.Helper()
	switches := []Switch{{Name: "4.14"}, {Name: "5.3"}, {Name: "5.4"}}
	run := Run{Repository: "https://github.com/ocaml/opam-repository", Commit: "abcdef0123456789abcdef0123456789abcdef01", Switches: switches, Status: RunRunning}
	id, err := f.store.CreateRun(context.Background(), &run)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var rs []Result
	for i := range 4500 {
		pkg := fmt.Sprintf("package-%04d.%d.%d.0", i/3, 1+i%3, r.IntN(10))
		for _, sw := range switches {
			st := Good
			switch n := r.IntN(100); {
			case n < 15:
				st = NotAvailable
			case n < 20:
				st = Bad
			case n < 23:
				st = Partial
			case n < 24:
				st = InternalFailure
			}
			rs = append(rs, Result{Run: id, Package: pkg, Switch: sw.Name, State: st, Revdeps: r.IntN(200),
				Maintainers: []string{fmt.Sprintf("maintainer%d@example.org", r.IntN(300))}, Log: LogRef{Key: LogKey(sw.Name, pkg)}})
		}
	}
	if err := f.store.PutResults(context.Background(), rs); err != nil {
		b.Fatal(err)
	}
	if err := f.store.SetRunStatus(context.Background(), id, RunDone, ""); err != nil {
		b.Fatal(err)
	}
	return id
}

func serve(b *testing.B, h http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// BenchmarkMatrixPage renders the matrix of a run of 4,500 packages × 3 switches: as
// served once the run's rows are cached (every request after the first), with a
// filter, and cold (the rows read from the store each time).
func BenchmarkMatrixPage(b *testing.B) {
	f := newUIFixture(b)
	id := fillLarge(b, f)
	b.Run("render only", func(b *testing.B) {
		d, err := f.ui.load(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		req := httptest.NewRequest("GET", fixturePrefix+"/?show-latest-only=false", nil)
		var size int
		for b.Loop() {
			mv, err := f.ui.matrix(req, d)
			if err != nil {
				b.Fatal(err)
			}
			w := httptest.NewRecorder()
			f.ui.render(w, "matrix.html", "health check", mv)
			size = w.Body.Len()
		}
		b.ReportMetric(float64(size), "page-bytes")
	})
	for _, tc := range []struct {
		name, query string
		cold        bool
	}{
		{name: "all versions", query: "?show-latest-only=false"},
		{name: "default", query: ""},
		{name: "failures only", query: "?show-failures-only=true&show-latest-only=false"},
		{name: "cold", query: "?show-latest-only=false", cold: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				if tc.cold {
					f.ui.cache = runCache{}
				}
				w := serve(b, f.ui, fixturePrefix+"/"+tc.query)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "page-bytes")
		})
	}
}

// BenchmarkLatestPackagesAPI serves /api/v1/latest/packages of a run of 4,500 packages
// × 3 switches: in full, and to a client that has it (If-None-Match, 304).
func BenchmarkLatestPackagesAPI(b *testing.B) {
	f := newUIFixture(b)
	fillLarge(b, f)
	path := fixturePrefix + "/api/v1/latest/packages"
	etag := serve(b, f.ui, path).Header().Get("ETag")
	for _, tc := range []struct {
		name   string
		header []string
		code   int
	}{
		{"full", nil, 200},
		{"etag", []string{"If-None-Match", etag}, 304},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				w := serve(b, f.ui, path, tc.header...)
				if w.Code != tc.code {
					b.Fatalf("status %d, want %d", w.Code, tc.code)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "body-bytes")
		})
	}
}
