package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeForges records what the service publishes.
type fakeForges struct {
	mu       sync.Mutex
	statuses map[string]forge.Status // by check name and commit
	comments map[int]string          // by PR
	edits    int
}

func (f *fakeForges) PublishCheck(_ context.Context, ref forge.Ref, check forge.Check, st forge.Status, _ []forge.Variant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[check.Name+"@"+ref.Commit] = st
	return nil
}

func (f *fakeForges) Comment(_ context.Context, ref forge.Ref, marker, body string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(body, marker) {
		return fmt.Errorf("comment without its marker")
	}
	f.comments[ref.PR] = body
	f.edits++
	return nil
}

// v3 prints a benchmark output with two metrics and a log line between them.
func v3(times, allocs []float64) string {
	js := func(xs []float64) string { b, _ := json.Marshal(xs); return string(b) }
	return "compiling...\n" +
		`{"name": "suite", "results": [{"name": "sort", "metrics": [{"name": "time", "value": ` + js(times) + `, "units": "ms", "trend": "lower-is-better"}]}]}` +
		"\nrunning alloc\n" +
		`{"name": "suite", "results": [{"name": "sort", "metrics": [{"name": "gc/alloc", "value": ` + js(allocs) + `, "units": "MB"}, {"name": "gc/minor", "value": {"min": 1, "avg": 2, "max": 3}}]}]}` + "\n"
}

type testService struct {
	srv    *httptest.Server
	store  *store.Store
	forges *fakeForges
	token  string
}

func newTestService(t *testing.T) *testService {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ff := &fakeForges{statuses: map[string]forge.Status{}, comments: map[int]string{}}
	o := detect.Options{}
	ui, err := NewUI(st, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	pub := &Publisher{Store: st, Forges: ff, Target: "main", Options: o}
	api, err := NewAPI(API{Store: st, Options: o, Logger: quiet, OnJudged: func(ctx context.Context, c Comparison) {
		if err := pub.Publish(ctx, c); err != nil {
			t.Errorf("publish: %v", err)
		}
	}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix+"/", ui)
	mux.Handle(Prefix+"/api/v1/runs", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tok, err := st.AddToken(ctx, "gitea/o/lib", "test")
	if err != nil {
		t.Fatal(err)
	}
	return &testService{srv: srv, store: st, forges: ff, token: tok}
}

func (s *testService) submit(t *testing.T, query, token, body string) (int, SubmitResponse) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.srv.URL+Prefix+"/api/v1/runs?"+query, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sr SubmitResponse
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &sr)
	return resp.StatusCode, sr
}

func (s *testService) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(s.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, b)
	}
	return string(b)
}

// noisy returns n values around mid, spread by about 1 %.
func noisy(mid float64, n, seed int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = mid * (1 + 0.01*float64((i*7+seed*3)%5-2)/2)
	}
	return out
}

// seedHistory submits commits on main and an interleaved PR run whose time is 30 %
// slower, its allocations unchanged.
func seedHistory(t *testing.T, s *testService) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6 {
		q := fmt.Sprintf("repo=gitea/o/lib&branch=main&commit=m%d&commit_time=%s", i, t0.Add(time.Duration(i)*time.Hour).Format(time.RFC3339))
		if code, r := s.submit(t, q, s.token, v3(noisy(100, 5, i), noisy(50, 5, i+1))); code != 200 || r.Metrics != 3 {
			t.Fatalf("main commit %d: %d %+v", i, code, r)
		}
	}
	pr := "repo=gitea/o/lib&pr=4&commit=p1&base=m5&commit_time=" + t0.Add(7*time.Hour).Format(time.RFC3339)
	code, r := s.submit(t, pr+"&arm=base", s.token, v3(noisy(100, 5, 9), noisy(50, 5, 2)))
	if code != 200 {
		t.Fatalf("base arm: %d %+v", code, r)
	}
	code, r = s.submit(t, pr+fmt.Sprintf("&run=%d", r.Run), s.token, v3(noisy(130, 5, 4), noisy(50, 5, 3)))
	if code != 200 || r.Comparison == nil {
		t.Fatalf("head arm: %d %+v", code, r)
	}
}

func TestSubmitAndJudge(t *testing.T) {
	s := newTestService(t)
	seedHistory(t, s)
	runs, _ := s.store.Runs(context.Background(), store.Filter{Repo: "gitea/o/lib", PR: 4})
	if len(runs) != 1 {
		t.Fatalf("%d PR runs, want 1", len(runs))
	}
	c, err := Compare(context.Background(), s.store, runs[0], "main", detect.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"suite/sort/time": "regression", "suite/sort/gc/alloc": "unchanged", "suite/sort/gc/minor": "unchanged"}
	for _, r := range c.Rows {
		got := "unchanged"
		if r.Regression {
			got = "regression"
		} else if r.Improvement {
			got = "improvement"
		}
		t.Run(r.Key.String(), func(t *testing.T) {
			if got != want[r.Key.String()] {
				t.Errorf("%s is %s (%s), want %s", r.Key, got, r.Verdict, want[r.Key.String()])
			}
		})
	}
	t.Run("status names the regression only", func(t *testing.T) {
		st := s.forges.statuses["kiln-bench@p1"]
		if st.State != forge.Failed || !strings.Contains(st.Title, "suite/sort/time +30") || strings.Contains(st.Title, "alloc") {
			t.Errorf("status %+v", st)
		}
		if main := s.forges.statuses["kiln-bench@m5"]; main.State != forge.Passed {
			t.Errorf("status of main's unchanged commit %+v", main)
		}
	})
	t.Run("comment lists only the significant change, edited in place", func(t *testing.T) {
		body := s.forges.comments[4]
		if !strings.Contains(body, "| suite/sort/time |") || strings.Contains(body, "gc/alloc") || !strings.Contains(body, "1 regressions") {
			t.Errorf("comment:\n%s", body)
		}
		if s.forges.edits != 2 { // the base arm's submit, then the head's: the same comment
			t.Errorf("%d comment edits, want 2", s.forges.edits)
		}
	})
	t.Run("PR page table and JSON twin", func(t *testing.T) {
		html := s.get(t, "/bench/r/gitea/o/lib/pr/4")
		if !strings.Contains(html, `data-metric="suite/sort/time"`) || !strings.Contains(html, `<span class="regression">regression</span>`) {
			t.Errorf("PR page without the regression row:\n%s", html)
		}
		var page PRPage
		if err := json.Unmarshal([]byte(s.get(t, "/bench/r/gitea/o/lib/pr/4?format=json")), &page); err != nil {
			t.Fatal(err)
		}
		if page.Comparison == nil || len(page.Comparison.Rows) != 3 {
			t.Fatalf("JSON twin %+v", page)
		}
		if n := len(page.Charts); n != 2 {
			t.Errorf("%d charts, want 2 (time; gc/alloc and gc/minor together)", n)
		}
		for _, ch := range page.Charts {
			if len(ch.PR) == 0 || !ch.PR[len(ch.PR)-1] || ch.PR[0] {
				t.Errorf("chart %s: the PR's point is not after main's: %v", ch.Title, ch.PR)
			}
		}
	})
	t.Run("branch page range and metrics from the URL", func(t *testing.T) {
		from := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC).Unix()
		var page BranchPage
		if err := json.Unmarshal([]byte(s.get(t, fmt.Sprintf("/bench/r/gitea/o/lib?format=json&from=%d&to=2026-03-01T04:00:00Z&metrics=time", from))), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Charts) != 1 || len(page.Charts[0].X) != 3 || page.Charts[0].Commits[0] != "m2" {
			t.Errorf("charts %+v", page.Charts)
		}
	})
	t.Run("run page has the lines", func(t *testing.T) {
		html := s.get(t, fmt.Sprintf("/bench/r/gitea/o/lib/run/%d", runs[0].ID))
		if !strings.Contains(html, "2–2") || !strings.Contains(html, "4–4") {
			t.Errorf("run page without the lines that printed the metrics:\n%s", html)
		}
	})
}

func TestSubmitRefused(t *testing.T) {
	s := newTestService(t)
	other, _ := s.store.AddToken(context.Background(), "gitea/o/other", "x")
	cases := []struct {
		name, query, token, body string
		code                     int
	}{
		{"no token", "repo=gitea/o/lib&branch=main&commit=a", "", "x", http.StatusUnauthorized},
		{"another repository's token", "repo=gitea/o/lib&branch=main&commit=a", other, "x", http.StatusForbidden},
		{"wrong token", "repo=gitea/o/lib&branch=main&commit=a", "kb_nope", "x", http.StatusForbidden},
		{"no commit", "repo=gitea/o/lib&branch=main", s.token, "x", http.StatusBadRequest},
		{"neither branch nor pr", "repo=gitea/o/lib&commit=a", s.token, "x", http.StatusBadRequest},
		{"bad arm", "repo=gitea/o/lib&branch=main&commit=a&arm=left", s.token, "x", http.StatusBadRequest},
		{"no results: a failed run", "repo=gitea/o/lib&branch=main&commit=a", s.token, "only logs\n", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, r := s.submit(t, c.query, c.token, c.body)
			if code != c.code {
				t.Fatalf("status %d, want %d", code, c.code)
			}
			if code == http.StatusOK {
				run, err := s.store.Run(context.Background(), r.Run)
				if err != nil || run.State != store.Failed || !strings.Contains(run.Reason, "no benchmark results") {
					t.Errorf("run %+v, %v", run, err)
				}
			}
		})
	}
}
