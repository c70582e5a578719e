package demo

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// TestPipelineInSandbox runs the demonstration pipeline with its jobs in the sandboxed
// builder: the check script sees the base image's files, not the host's.
func TestPipelineInSandbox(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "tar")
	base := imagetest.Debian(t)
	b, err := builder.New(builder.Options{Root: t.TempDir(), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	repo := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(repo, 0o755)
	os.WriteFile(filepath.Join(repo, "check.sh"), []byte("#!/bin/sh\necho \"debian $(cat /etc/debian_version)\"\nls /src\ntest ! -e /src/.git\n"), 0o755)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "one"}} {
		if err := gitRun(ctx, repo, args...); err != nil {
			t.Fatal(err)
		}
	}
	state := t.TempDir()
	eng, err := current.Open(current.Config{StateDir: state, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- eng.Run(runCtx, Pipeline(Options{Repo: repo, WorkDir: filepath.Join(state, "demo"), Poll: 100 * time.Millisecond,
			Runner: SandboxRunner{Builder: b, Image: base.Ref}}))
	}()
	defer func() { cancel(); <-done }()
	var check current.JobInfo
	deadline := time.Now().Add(5 * time.Minute)
	for {
		res, err := eng.Query(current.Query{Op: "demo-check"})
		if err == nil && len(res) == 1 && (res[0].State == current.JobOK || res[0].State == current.JobFailed) {
			check = res[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandboxed check did not finish: %+v %v", res, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var log strings.Builder
	for off := int64(0); ; {
		ch, err := eng.ReadLog(check.ID, off, 0)
		if err != nil {
			t.Fatal(err)
		}
		log.Write(ch.Data)
		off = ch.Next
		if ch.Done || len(ch.Data) == 0 {
			break
		}
	}
	if check.State != current.JobOK {
		t.Fatalf("sandboxed check %s: %s\n%s", check.State, check.Message, log.String())
	}
	for _, want := range []string{"(sandboxed, from " + base.Ref, "FROM " + base.Ref, "debian 12", "check.sh"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}
