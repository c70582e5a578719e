package opamrepoci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// latches are the base commits latched per pull-request head ("repo ref head" →
// base), kept in a file so a restart tests a head against the same base.
type latches struct {
	path   string
	mu     sync.Mutex
	m      map[string]string
	loaded bool
	dirty  bool // m differs from the file
}

func (l *latches) load() {
	if l.loaded {
		return
	}
	l.loaded = true
	l.m = map[string]string{}
	data, err := os.ReadFile(l.path)
	if err == nil {
		json.Unmarshal(data, &l.m) // a damaged file latches anew
	}
}

// base returns the base latched for key, latching current when there is none.
func (l *latches) base(key, current string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.load()
	if b, ok := l.m[key]; ok {
		return b
	}
	l.m[key] = current
	l.dirty = true
	return current
}

// keep forgets the latches not in keys and saves the rest.
func (l *latches) keep(keys []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.load()
	next := make(map[string]string, len(keys))
	for _, k := range keys {
		if b, ok := l.m[k]; ok {
			next[k] = b
		}
	}
	if len(next) != len(l.m) {
		l.dirty = true
	}
	l.m = next
	if !l.dirty {
		return nil
	}
	data, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return fmt.Errorf("latched bases: %w", err)
	}
	tmp := l.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("latched bases: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("latched bases: %w", err)
	}
	l.dirty = false
	return nil
}
