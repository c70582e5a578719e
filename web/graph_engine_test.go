package web

import (
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
)

func TestGraphCollapsesListMapOfRealEngine(t *testing.T) {
	var items []string
	for i := range 30 {
		items = append(items, fmt.Sprintf("item%02d", i))
	}
	c := newConsole(t, items...)
	c.waitFor("30 builds", func() bool {
		res, err := c.eng.Query(current.Query{Op: "build", States: []current.JobState{current.JobOK}})
		return err == nil && len(res) == 30
	})
	cl := c.client()
	_, body := cl.get("/")
	if n := strings.Count(body, "<rect"); n > 8 {
		t.Fatalf("collapsed graph draws %d boxes:\n%s", n, body)
	}
	link := regexpFind(`<a href="(/\?expand=[^"]+)"><g class="node s-ok group"`, body)
	if link == "" {
		t.Fatalf("no collapsed ok group linking to its expansion:\n%s", body)
	}
	// Expanded, the ListMap shows one box per item; expanding an item shows its stages.
	code, body := cl.get(html.UnescapeString(link))
	itemBoxes := regexpAll(`<a href="(/\?[^"]+)"><g class="node s-ok group"[^>]*><title>(item\d\d)`, body)
	if code != 200 || len(itemBoxes) != 30 || strings.Count(body, `href="/job/`) != 0 {
		t.Fatalf("expanded graph: %d, %d item boxes, %d job links:\n%s", code, len(itemBoxes), strings.Count(body, `href="/job/`), body)
	}
	if !strings.Contains(body, "Collapse all groups") {
		t.Errorf("expanded graph offers no way back")
	}
	code, body = cl.get(html.UnescapeString(itemBoxes[7][1]))
	if code != 200 || strings.Count(body, `href="/job/`) != 1 || !strings.Contains(body, "item07") {
		t.Fatalf("expanded item: %d, %d job links:\n%s", code, strings.Count(body, `href="/job/`), body)
	}
	if n := strings.Count(body, "<rect"); n < 30+4 {
		t.Fatalf("expanded item: %d boxes", n)
	}
}

func regexpAll(re, s string) [][]string { return mustRegexp(re).FindAllStringSubmatch(s, -1) }

// BenchmarkGraphPage10000 serves the graph page of a live 10,000-stage pipeline (3,334
// ListMap items of three stages), collapsed and with the big group expanded.
func BenchmarkGraphPage10000(b *testing.B) {
	dir := b.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := current.Open(current.Config{StateDir: dir, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	var items []int
	for i := range 3334 {
		items = append(items, i)
	}
	v := current.NewVar("items", items)
	pipeline := current.ListIter(v.Term(), func(i int) string { return fmt.Sprint(i) }, func(t current.Term[int]) current.Term[current.Unit] {
		return current.Map(current.Map(t, func(i int) int { return i * 2 }), func(int) current.Unit { return current.Unit{} })
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, pipeline) }()
	defer func() { cancel(); <-done; eng.Close() }()
	auth, _, err := OpenAuth(AuthOptions{Dir: filepath.Join(dir, "console"), AdminPassword: "x", Anonymous: RoleViewer})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Engine: CurrentEngine{eng}, Auth: auth, Logger: log, Register: reg, Gatherer: reg})
	if err != nil {
		b.Fatal(err)
	}
	for len(eng.Graph().Nodes) < 10000 {
		<-func() <-chan struct{} { ch, stop := eng.Subscribe(); defer stop(); return ch }()
	}
	var group string
	for _, gi := range mustGraph(b, s).Groups {
		if gi.Kind == "listmap" {
			group = gi.ID
		}
	}
	for _, tc := range []struct{ name, path string }{{"collapsed", "/"}, {"expanded", "/?expand=" + group}} {
		b.Run(tc.name, func(b *testing.B) {
			size := 0
			for b.Loop() {
				w := httptest.NewRecorder()
				s.ServeHTTP(w, httptest.NewRequest("GET", tc.path, nil))
				if w.Code != http.StatusOK {
					b.Fatalf("%s: %d", tc.path, w.Code)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "page-bytes")
			b.ReportMetric(float64(len(eng.Graph().Nodes)), "stages")
		})
	}
}

func mustGraph(b *testing.B, s *Server) Graph {
	g, err := s.eng.Graph(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return g
}
