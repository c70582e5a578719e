package demo

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// Branches on one commit share its jobs, across a restart too: each key is built once.
func TestBranchesOnOneCommitShareItsJobs(t *testing.T) {
	testenv.RequireCommand(t, "git")
	ctx := context.Background()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := CreateSample(ctx, repo); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"x", "y", "z"} {
		if err := gitRun(ctx, repo, "branch", b, "main"); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	run := func() {
		e, err := current.Open(current.Config{StateDir: state})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- e.Run(rctx, Pipeline(Options{Repo: repo, WorkDir: filepath.Join(dir, "work"), Poll: 100 * time.Millisecond, CheckCmd: "true"}))
		}()
		deadline := time.Now().Add(time.Minute)
		for {
			r, _ := e.Query(current.Query{Op: "demo-check", States: []current.JobState{current.JobOK}})
			if len(r) == 2 { // main's commit (shared by x, y, z) and feature's
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("checks: %+v", r)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // a few more passes, for any flip-flop to show
		cancel()
		<-done
	}
	run()
	run()
	e, err := current.Open(current.Config{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	all, _ := e.Query(current.Query{Limit: 1000})
	for _, j := range all {
		if j.Build != 1 {
			t.Errorf("%s %s: build %d (%s), want every key built once", j.Op, j.Label, j.Build, j.Message)
		}
	}
}
