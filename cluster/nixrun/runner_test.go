package nixrun_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/cluster/nixrun/nixtest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

const pool = "linux-x86_64-nix"

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func with(files map[string]string, rel, content string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		out[k] = v
	}
	out[rel] = content
	return out
}

// newRunner is a runner with its store in dir and the store budget given, and the
// registry of its metrics; it skips t where Nix cannot run.
func newRunner(t *testing.T, dir string, budget int64) (*nixrun.Runner, *prometheus.Registry) {
	t.Helper()
	nixtest.Require(t)
	o := nixtest.Options(dir)
	reg := prometheus.NewRegistry()
	o.Registry, o.Budget = reg, budget
	r, err := nixrun.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

// TestFleetBuildsNixExpressions runs Nix jobs on a Nix worker of an embedded fleet,
// offline: the OCaml program builds from default.nix and from the flake, and the
// project's failures come back typed, with their error lines.
func TestFleetBuildsNixExpressions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r, reg := newRunner(t, dir, 0)
	f, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(dir, "fleet"), Listen: "127.0.0.1:0", Pools: []string{pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	nixtest.StartWorker(t, f, "nix-1", pool, r)

	good := nixtest.Project("Hello from Nix")
	cases := []struct {
		name    string
		files   map[string]string
		greets  string // the program built prints this
		spec    nixrun.Spec
		kind    nixrun.FailureKind // "": the build succeeds
		lines   []string           // in the failure's lines
		message string             // in the job's message
	}{
		{name: "attribute of default.nix", files: good, greets: "Hello from Nix", spec: nixrun.Spec{Attr: "hello"}},
		{name: "flake output", files: nixtest.Project("Hello from a flake"), greets: "Hello from a flake", spec: nixrun.Spec{Flake: "hello", Impure: true}},
		{name: "missing attribute", files: good, spec: nixrun.Spec{Attr: "nope"}, kind: nixrun.FailEvaluation,
			lines: []string{"error: attribute 'nope' in selection path 'nope' not found"}, message: "nix evaluation failed: attribute 'nope'"},
		{name: "syntax error", files: with(good, "default.nix", "{ hello = 1 +; }\n"), spec: nixrun.Spec{Attr: "hello"}, kind: nixrun.FailEvaluation,
			lines: []string{"error: syntax error, unexpected ';'", "at default.nix:1:14:", "1| { hello = 1 +; }"}},
		{name: "OCaml type error", files: with(good, "hello.ml", "let () = print_endline 42\n"), spec: nixrun.Spec{Attr: "hello"}, kind: nixrun.FailBuild,
			lines:   []string{`File "hello.ml", line 1, characters 23-25:`, "Error: This expression has type int but an expression was expected of type", "error: builder for '/nix/store/"},
			message: "nix build failed: builder for"},
		{name: "missing flake output", files: good, spec: nixrun.Spec{Flake: "nope", Impure: true}, kind: nixrun.FailEvaluation,
			lines: []string{"error: flake 'path:.' does not provide attribute 'packages.x86_64-linux.nope.drvPath'"}},
		{name: "OCaml type error in a flake", files: with(nixtest.Project("flake"), "hello.ml", "let () = print_endline 1.5\n"), spec: nixrun.Spec{Flake: "hello", Impure: true}, kind: nixrun.FailBuild,
			lines: []string{"File \"hello.ml\", line 1, characters 23-26:\n1 | let () = print_endline 1.5", "Error: This expression has type float but an expression was expected of type", "error: builder for '/nix/store/"}},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		digest, err := f.Client.PutSource(ctx, writeTree(t, c.files))
		if err != nil {
			t.Fatal(err)
		}
		job, err := f.Client.Submit(ctx, cluster.Request{Pool: pool, Client: "test", Spec: c.spec.Encode(), Source: digest, CacheHint: "nix hello", Urgent: true})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = job.ID
	}
	runs := map[string]float64{} // kiln_nix_runs_total expected, by result
	retried := false
	for i, c := range cases {
		result := string(c.kind)
		if result == "" {
			result = "ok"
		}
		runs[`kiln_nix_runs_total{result=`+result+`}`]++
		t.Run(c.name, func(t *testing.T) {
			job, err := f.Client.Wait(ctx, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			retried = retried || job.Result.Attempts > 1
			var log bytes.Buffer
			if _, err := f.Client.Log(ctx, ids[i], 0, false, &log); err != nil {
				t.Fatal(err)
			}
			res := job.Result
			out, err := nixrun.DecodeOutput(res.Output)
			if err != nil {
				t.Fatalf("%s (%s): %v\n%s", res.Outcome, res.Message, err, log.String())
			}
			if c.kind == "" {
				checkBuilt(t, dir, res, out, c.greets, log.String())
				return
			}
			if res.Outcome != cluster.OutcomeFailed || out.Failure == nil || out.Failure.Kind != c.kind {
				t.Fatalf("%s (%s), output %+v; want a failed %s\n%s", res.Outcome, res.Message, out, c.kind, log.String())
			}
			got := strings.Join(out.Failure.Lines, "\n")
			for _, want := range c.lines {
				if !strings.Contains(got, want) {
					t.Errorf("failure lines lack %q:\n%s", want, got)
				}
			}
			if !strings.Contains(res.Message, c.message) {
				t.Errorf("message %q lacks %q", res.Message, c.message)
			}
		})
	}
	if retried {
		t.Logf("a job ran again (its worker's lease lapsed under load): its runs are counted twice")
		return
	}
	m := testenv.Metrics(t, reg)
	for k, want := range runs {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
}

// checkBuilt checks a successful job: its output path is in the store and runs, and
// its closure is measured.
func checkBuilt(t *testing.T, dir string, res *cluster.Result, out *nixrun.Output, greeting, log string) {
	t.Helper()
	if res.Outcome != cluster.OutcomeOK || len(out.Paths) != 1 || !strings.HasPrefix(out.Paths[0], "/nix/store/") || res.Snapshot != out.Paths[0] {
		t.Fatalf("%s (%s), output %+v, snapshot %q\n%s", res.Outcome, res.Message, out, res.Snapshot, log)
	}
	bin := filepath.Join(dir, "store", out.Paths[0], "bin", "hello")
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if out.ClosurePaths != 1 || out.ClosureSize < st.Size() {
		t.Errorf("closure of %d paths, %d bytes; want the output alone, at least the program's %d bytes", out.ClosurePaths, out.ClosureSize, st.Size())
	}
	ran, err := exec.Command(bin).Output()
	if err != nil || strings.TrimSpace(string(ran)) != greeting {
		t.Errorf("%s: %q, %v; want %q", bin, ran, err, greeting)
	}
	// A job that ran again may find its output built by the attempt before.
	if res.Attempts == 1 && !strings.Contains(log, greeting+"\n") || !strings.Contains(log, "nix: closure of 1 store paths") {
		t.Errorf("log lacks the program's run in the sandbox or the closure:\n%s", log)
	}
}

// TestInfrastructureFailures checks that Nix failing for the machine's sake is not the
// project's failure, and that the health check sees it.
func TestInfrastructureFailures(t *testing.T) {
	nixtest.Require(t)
	src := writeTree(t, nixtest.Project("Hello"))
	// A source fetched by a fixed-output derivation, as nixpkgs fetches every source
	// it has no binary for, from a server that does not answer.
	fetch := writeTree(t, map[string]string{"default.nix": `{ hello = derivation { name = "src.tar.gz"; system = builtins.currentSystem;
  builder = "builtin:fetchurl"; url = "http://127.0.0.1:1/src.tar.gz";
  outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "0000000000000000000000000000000000000000000000000000"; }; }
`})
	cases := []struct {
		name    string
		prepare func(t *testing.T, o *nixrun.Options)
		src     string // default: the OCaml project
		healthy bool   // the health check passes all the same
		want    string
	}{
		{name: "damaged store database", want: "SQLite", prepare: func(t *testing.T, o *nixrun.Options) {
			db := filepath.Join(o.Store, "nix", "var", "nix", "db")
			if err := os.MkdirAll(db, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(db, "db.sqlite"), []byte("not a database\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "sandbox path missing on the worker", want: "getting attributes of path '/nonexistent-kiln-test'", prepare: func(t *testing.T, o *nixrun.Options) {
			o.SandboxPaths = append(append([]string{}, o.SandboxPaths...), "/nonexistent-kiln-test")
		}},
		{name: "download fails", src: fetch, healthy: true, want: "unable to download 'http://127.0.0.1:1/src.tar.gz'", prepare: func(t *testing.T, o *nixrun.Options) {
			o.Settings = map[string]string{"substituters": "", "download-attempts": "1"}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			o := nixtest.Options(t.TempDir())
			c.prepare(t, &o)
			r, err := nixrun.New(o)
			if err != nil {
				t.Fatal(err)
			}
			tree := src
			if c.src != "" {
				tree = c.src
			}
			var log bytes.Buffer
			_, out, err := r.RunOutput(ctx, cluster.Task{ID: "j1", Spec: nixrun.Spec{Attr: "hello"}.Encode(), Context: tree}, &log)
			if !cluster.IsInfrastructure(err) || out != nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v (output %s); want an infrastructure error naming %q\n%s", err, out, c.want, log.String())
			}
			if err := r.Health(ctx); (err == nil) != c.healthy {
				t.Errorf("health check: %v", err)
			}
		})
	}
}

// TestPruneCollectsEndedBuilds builds, then prunes a store over its budget: the
// output of the ended build goes, and the bytes freed are counted.
func TestPruneCollectsEndedBuilds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r, reg := newRunner(t, dir, 1)
	if err := r.Health(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	var log bytes.Buffer
	snap, _, err := r.RunOutput(ctx, cluster.Task{ID: "j1", Spec: nixrun.Spec{Attr: "hello"}.Encode(), Context: writeTree(t, nixtest.Project("Hello"))}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "store", snap)); err != nil {
		t.Fatal(err)
	}
	if err := r.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "store", snap)); !os.IsNotExist(err) {
		t.Errorf("%s is still in the store after a collection down to 1 byte: %v", snap, err)
	}
	if freed := testenv.Metrics(t, reg)["kiln_nix_gc_freed_bytes_total{}"]; freed <= 0 {
		t.Errorf("kiln_nix_gc_freed_bytes_total = %v", freed)
	}
}

// TestCancelStopsTheBuild cancels a job while its builder runs: the run returns, and no
// process of the build is left.
func TestCancelStopsTheBuild(t *testing.T) {
	dir := t.TempDir()
	r, _ := newRunner(t, dir, 0)
	marker := "kiln-cancel" + strings.ReplaceAll(dir, "/", "-")
	files := with(nixtest.Project("Hello"), "default.nix", `{ slow = let
    bb = builtins.path { path = /usr/bin; name = "busybox-static"; filter = p: t: baseNameOf p == "busybox"; };
  in derivation { name = "slow"; system = builtins.currentSystem; builder = "${bb}/busybox";
    args = [ "sh" "-c" "echo started-`+marker+`; sleep 600; echo `+marker+`" ]; };
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	log := &watchWriter{want: "started-" + marker, seen: started}
	done := make(chan error, 1)
	go func() {
		_, _, err := r.RunOutput(ctx, cluster.Task{ID: "slow", Spec: nixrun.Spec{Attr: "slow"}.Encode(), Context: writeTree(t, files)}, log)
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the build ended before it was cancelled: %v\n%s", err, log.String())
	case <-time.After(5 * time.Minute):
		t.Fatalf("the builder never started:\n%s", log.String())
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled build succeeded")
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the run did not return after its cancellation")
	}
	// The builder is gone once the run returns; the wait only rides out a slow /proc.
	deadline := time.Now().Add(time.Minute)
	for pids := processesWith(t, marker); len(pids) > 0; pids = processesWith(t, marker) {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the cancelled build are left: %v", pids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchWriter keeps what is written and closes seen once it contains want.
type watchWriter struct {
	testenv.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Contains(w.Buffer.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

// processesWith lists the processes whose command line holds s.
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// TestCacheHintFindsTheStore runs the same expression twice on a pool of two Nix
// workers, each with its own store: the second job, with the same cache hint, goes to
// the worker whose store has the output, and builds nothing.
func TestCacheHintFindsTheStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(dir, "fleet"), Listen: "127.0.0.1:0", Pools: []string{pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	for _, name := range []string{"nix-a", "nix-b"} {
		r, _ := newRunner(t, filepath.Join(dir, name), 0)
		nixtest.StartWorker(t, f, name, pool, r)
	}
	digest, err := f.Client.PutSource(ctx, writeTree(t, nixtest.Project("Hello again")))
	if err != nil {
		t.Fatal(err)
	}
	var first *cluster.Job
	for i := 0; i < 2; i++ {
		job, err := f.Client.Submit(ctx, cluster.Request{Pool: pool, Client: "test", Spec: nixrun.Spec{Attr: "hello"}.Encode(), Source: digest, CacheHint: "nix hello", Urgent: true})
		if err != nil {
			t.Fatal(err)
		}
		if job, err = f.Client.Wait(ctx, job.ID); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		if _, err := f.Client.Log(ctx, job.ID, 0, false, &log); err != nil {
			t.Fatal(err)
		}
		if job.Result.Outcome != cluster.OutcomeOK {
			t.Fatalf("job %d: %s (%s)\n%s", i+1, job.Result.Outcome, job.Result.Message, log.String())
		}
		switch {
		case i == 0:
			first = job
			if !strings.Contains(log.String(), "Hello again\n") {
				t.Fatalf("the first job did not build the program:\n%s", log.String())
			}
		case job.Result.Worker != first.Result.Worker:
			t.Errorf("the second job ran on %s, not on %s, which holds the cache hint", job.Result.Worker, first.Result.Worker)
		case strings.Contains(log.String(), "building '"):
			t.Errorf("the second job built again on %s:\n%s", job.Result.Worker, log.String())
		case job.Result.Snapshot != first.Result.Snapshot:
			t.Errorf("the second job's output %s is not the first's %s", job.Result.Snapshot, first.Result.Snapshot)
		}
	}
}
