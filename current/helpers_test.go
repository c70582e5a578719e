package current

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"
)

// testEngine opens an engine in a temporary state folder.
func testEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// running runs root on e until the test ends.
func running(t testing.TB, e *Engine, root AnyTerm) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, root) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// eventually waits until cond holds, failing t after a generous time.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nodeByLabel finds a node of the live graph.
func nodeByLabel(e *Engine, label string) (Node, bool) {
	for _, n := range e.Graph().Nodes {
		if n.Label == label {
			return n, true
		}
	}
	return Node{}, false
}

type sync32 struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *sync32) inc(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[k]++
}

func (s *sync32) get(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

func (s *sync32) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.m {
		n += v
	}
	return n
}

func (s *sync32) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}
