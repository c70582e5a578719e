package logarchive

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Retention says which runs Prune keeps.
type Retention struct {
	// MaxAge removes runs begun longer ago than this; zero keeps runs of any age.
	MaxAge time.Duration
	// MaxRuns keeps only the newest runs, this many; zero keeps any number.
	MaxRuns int
	// Keep names runs kept whatever their age or rank (the run being written, the
	// baseline of a candidate).
	Keep []string
}

// Prune removes whole runs as r says and returns their names, the newest first.
func (a *Archive) Prune(r Retention) ([]string, error) {
	runs, err := a.Runs()
	if err != nil {
		return nil, err
	}
	now := a.opts.Now()
	var removed []string
	for i, run := range runs {
		old := r.MaxAge > 0 && now.Sub(run.Created) > r.MaxAge
		many := r.MaxRuns > 0 && i >= r.MaxRuns
		if !(old || many) || slices.Contains(r.Keep, run.Name) {
			continue
		}
		if err := a.Remove(run.Name); err != nil {
			return removed, err
		}
		a.m.pruned.Inc()
		a.log.Info("run pruned", "run", run.Name, "created", run.Created, "too_old", old, "beyond_max_runs", many)
		removed = append(removed, run.Name)
	}
	return removed, nil
}

// Remove deletes a run and its logs; readers see it gone at once.
func (a *Archive) Remove(run string) error {
	d, err := a.runDir(run)
	if err != nil {
		return err
	}
	gone := filepath.Join(a.dir, ".removing-"+run)
	if err := os.Rename(d, gone); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("log archive: remove run %s: %w", run, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("log archive: remove run %s: %w", run, err)
	}
	return nil
}
