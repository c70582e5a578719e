package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/cluster/nixrun/nixtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
)

func TestNixRunnerFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		err  string // in the error; "" for none
	}{
		{name: "offline with the host's OCaml", args: []string{"--nix-option", "substituters=", "--nix-sandbox-path", "/usr", "--nix-sandbox-path", "/bin=/usr/bin", "--nix-min-free", "10G"}},
		{name: "defaults", args: nil},
		{name: "option without a value", args: []string{"--nix-option", "substituters"}, err: `--nix-option "substituters": want NAME=VALUE`},
		{name: "option without a name", args: []string{"--nix-option", "=x"}, err: "want NAME=VALUE"},
		{name: "bad free space", args: []string{"--nix-min-free", "ten"}, err: "--nix-min-free"},
		{name: "sandbox path with a blank", args: []string{"--nix-sandbox-path", "/a /b"}, err: "sandbox path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var n nixFlags
			fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
			n.add(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			r, err := n.runner(t.TempDir(), 0, prometheus.NewRegistry())
			switch {
			case c.err == "" && (err != nil || r == nil):
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			}
		})
	}
}

// TestWorkerRunsNixJobs runs kiln worker --runner nix against an embedded fleet and
// builds the OCaml program of nixtest's project on it, offline.
func TestWorkerRunsNixJobs(t *testing.T) {
	nixtest.Require(t)
	const pool = "linux-x86_64-nix"
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(dir, "fleet"), Listen: "127.0.0.1:0", Pools: []string{pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	args := []string{"worker", "--nats", fleet.URL, "--token", fleet.WorkerToken, "--name", "nix-1", "--pool", pool,
		"--runner", "nix", "--state-dir", filepath.Join(dir, "worker"), "--nix-store", filepath.Join(dir, "store"),
		"--nix-option", "substituters=", "--health-every", "1h"}
	for _, p := range nixtest.HostSandboxPaths {
		args = append(args, "--nix-sandbox-path", p)
	}
	workerCtx, stopWorker := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		rootCmd.SetArgs(args)
		done <- rootCmd.ExecuteContext(workerCtx)
	}()
	defer func() {
		stopWorker()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("kiln worker: %v", err)
		}
	}()

	src := t.TempDir()
	for rel, content := range nixtest.Project("Hello from kiln worker") {
		if err := os.WriteFile(filepath.Join(src, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := fleet.Client.PutSource(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	job, err := fleet.Client.Submit(ctx, cluster.Request{Pool: pool, Client: "test", Spec: nixrun.Spec{Attr: "hello"}.Encode(), Source: digest})
	if err != nil {
		t.Fatal(err)
	}
	if job, err = fleet.Client.Wait(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	out, err := nixrun.DecodeOutput(job.Result.Output)
	if err != nil || job.Result.Outcome != cluster.OutcomeOK || len(out.Paths) != 1 || job.Result.Worker != "nix-1" {
		t.Fatalf("%s on %s (%s), output %s: %v", job.Result.Outcome, job.Result.Worker, job.Result.Message, job.Result.Output, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "store", out.Paths[0], "bin", "hello")); err != nil {
		t.Errorf("the program is not in the worker's --nix-store: %v", err)
	}
}
