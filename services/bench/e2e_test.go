package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// The OCaml project of the end-to-end test: two benchmarks timed in CPU time, fib's
// amount of work read from the file work.
const (
	benchML = `let time f = let t0 = Sys.time () in f (); (Sys.time () -. t0) *. 1000.
let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)
let work = int_of_string (String.trim (input_line (open_in "work")))
let () =
  print_endline "warming up";
  let fib_ms = time (fun () -> for _ = 1 to work do ignore (Sys.opaque_identity (fib 20)) done) in
  let sort_ms = time (fun () ->
    for i = 1 to 8 do
      let a = Array.init 100000 (fun j -> (j * 7919 + i) mod 100003) in
      Array.sort compare a
    done) in
  Printf.printf "{\"name\": \"demo\", \"results\": [{\"name\": \"ops\", \"metrics\": [\
{\"name\": \"fib\", \"value\": %.3f, \"units\": \"ms\", \"trend\": \"lower-is-better\"}, \
{\"name\": \"sort\", \"value\": %.3f, \"units\": \"ms\", \"trend\": \"lower-is-better\"}]}]}\n" fib_ms sort_ms
`
	makefile = "bench: bench.exe\n\t./bench.exe\n\nbench.exe: bench.ml\n\tocamlopt -o bench.exe bench.ml\n"
	kilnYML  = "bench:\n  command: make -s bench\n  repeats: 10\n"
)

// TestEndToEnd: a real OCaml project whose make bench prints v3 JSON, built and
// benchmarked in the Debian base image with Debian's OCaml: two commits on main, then a
// PR on a real Gitea that makes fib 30 % slower and leaves sort as it was. The
// pipeline follows the Gitea and benchmarks main's head and the PR, interleaved with
// it, on a fleet pool whose worker is a benchmark slot (its steps pinned to the last
// CPU). The PR's status, its comment and the PR page flag fib only.
func TestEndToEnd(t *testing.T) {
	testenv.Short(t, "builds an OCaml project in the sandbox and runs a Gitea server")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "tar")
	plat := matrix.Debian("amd64")
	base := imagetest.DebianWith(t, *plat.Debian)
	state := t.TempDir()
	// A fleet whose pool "bench" has one worker: a benchmark slot on the last CPU.
	slot := fmt.Sprint(runtime.NumCPU() - 1)
	runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(state, "builder"), Images: imagetest.Store(t).Root(),
		Limits: sandbox.Limits{CPUSet: slot}})
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := cluster.StartEmbedded(context.Background(), cluster.Options{StateDir: filepath.Join(state, "fleet"), Listen: "127.0.0.1:0", Pools: []string{"bench"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	nc, err := cluster.Connect(context.Background(), cluster.ConnOptions{URL: fleet.URL, Name: "bench-worker"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "slot", Pool: "bench", Capacity: 1,
		StateDir: filepath.Join(state, "worker"), Runner: runner, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); w.Run(wctx) }()
	t.Cleanup(func() { stopWorker(); <-workerDone; nc.Close() })

	srv := giteatest.Start(t)
	srv.CreateRepo(t, "ocaml-demo", false)
	work := gittest.NewRepo(t)
	files := map[string]string{"bench.ml": benchML, "Makefile": makefile, ".kiln.yml": kilnYML, "work": "3000\n"}
	work.Commit("benchmarks", files)
	m2 := work.Commit("readme", map[string]string{"README": "demo\n"})
	work.Git("checkout", "-q", "-b", "slower-fib")
	head := work.Commit("fib does 30 % more work", map[string]string{"work": "3900\n"})
	g := newGiteaBench(t, srv, work, "ocaml-demo", "slower-fib")
	ctx := context.Background()
	repoName := "gitea/" + srv.Admin + "/ocaml-demo"
	// The pipeline follows the Gitea: main's head is benchmarked, then the PR, run
	// interleaved with it, on the fleet's benchmark slot.
	eng, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Logger: quiet, Pools: fleetjob.EnginePools()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	p := &Pipeline{Forges: g.set, Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}), API: g.api,
		Fleet: &FleetRunner{Fleet: fleet.Client, Image: base.Ref}, WorkDir: filepath.Join(state, "work"), Logs: eng}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx, p.Term()) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	for deadline := time.Now().Add(15 * time.Minute); ; time.Sleep(time.Second) {
		runs, err := g.svc.store.Runs(ctx, store.Filter{Repo: repoName})
		if err != nil {
			t.Fatal(err)
		}
		finished := map[string]store.Run{}
		for _, r := range runs {
			if r.State.Finished() {
				finished[r.Commit] = r
			}
		}
		if r, ok := finished[head]; ok && finished[m2].ID != 0 {
			if r.State != store.Passed || finished[m2].State != store.Passed {
				t.Fatalf("runs %+v", finished)
			}
			t.Logf("main's head and the PR benchmarked in %s", time.Since(start).Round(time.Second))
			if m := r.Machine; m.CPUs != slot || m.Worker != "slot" || m.CPU == "" || m.Kernel == "" {
				t.Errorf("machine of the PR's run %+v, want the worker slot's CPU %s", m, slot)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs after 15 minutes: %+v", runs)
		}
	}
	// The job publishes after storing the run: wait for the job's end.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		done, err := eng.Query(current.Query{Op: "bench-run", KeyContains: head, States: []current.JobState{current.JobOK, current.JobFailed}})
		if err == nil && len(done) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PR's job did not end: %v", err)
		}
	}
	if runs, _ := g.svc.store.Runs(ctx, store.Filter{Repo: repoName, Branch: "slower-fib"}); len(runs) != 0 {
		t.Errorf("the branch slower-fib, not in bench.branches, has runs: %+v", runs)
	}
	t.Run("PR status flags fib only", func(t *testing.T) {
		sts, err := g.client.Statuses(ctx, g.repo, head)
		if err != nil {
			t.Fatal(err)
		}
		st := sts["kiln-bench (bench)"]
		if st.State != forge.Failed || !regexp.MustCompile(`demo/ops/fib \+[0-9.]+ %`).MatchString(st.Description) || strings.Contains(st.Description, "sort") {
			t.Errorf("statuses %+v", sts)
		}
		t.Logf("status: %s", st.Description)
	})
	t.Run("PR comment lists fib only", func(t *testing.T) {
		cs, err := g.client.Comments(ctx, g.repo, int(g.pr))
		if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, c := range cs {
			if strings.Contains(c.Body, CommentMarker) {
				ours = append(ours, c.Body)
			}
		}
		if len(ours) != 1 || !strings.Contains(ours[0], "| demo/ops/fib |") || strings.Contains(ours[0], "sort") {
			t.Errorf("comments %q", ours)
		}
	})
	t.Run("PR page flags fib only", func(t *testing.T) {
		var page PRPage
		if err := json.Unmarshal([]byte(g.svc.get(t, "/bench/r/"+repoName+"/pr/"+itoa(g.pr)+"?format=json")), &page); err != nil {
			t.Fatal(err)
		}
		if page.Comparison == nil {
			t.Fatal("no comparison on the PR page")
		}
		for _, r := range page.Comparison.Rows {
			want := r.Key.Name == "fib"
			if r.Regression != want || r.Improvement {
				t.Errorf("%s: regression %v improvement %v (%s), want regression %v", r.Key, r.Regression, r.Improvement, r.Verdict, want)
			}
			t.Logf("%s: PR %.1f ms, base %.1f ms, %s", r.Key, r.Value, r.Base, r.Verdict)
		}
		pts, _ := g.svc.store.RunPoints(ctx, page.Comparison.Run.ID)
		for _, p := range pts {
			t.Logf("%s %s: %v", p.Key, p.Arm, p.Value.Points())
		}
	})
	t.Run("each sample's line is placed in the job's log", func(t *testing.T) {
		runs, err := g.svc.store.Runs(ctx, store.Filter{Repo: repoName, PR: g.pr})
		if err != nil || len(runs) == 0 {
			t.Fatalf("the PR's runs: %v, %v", runs, err)
		}
		run := runs[len(runs)-1]
		var log []byte
		for off := int64(0); ; {
			ch, err := eng.ReadLog(run.Job, off, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			log = append(log, ch.Data...)
			if len(ch.Data) == 0 || ch.Done {
				break
			}
			off = ch.Next
		}
		lines := strings.Split(string(log), "\n")
		pts, err := g.svc.store.RunPoints(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			if len(p.LogLines) != len(p.Value.Samples) {
				t.Errorf("%s %q: %d samples, %d placed in the log", p.Key, p.Arm, len(p.Value.Samples), len(p.LogLines))
				continue
			}
			for k, l := range p.LogLines {
				want := fmt.Sprintf(`"name": %q, "value": %g`, p.Name, p.Value.Samples[k])
				if l.First < 1 || l.First > len(lines) || !strings.Contains(lines[l.First-1], want) {
					t.Errorf("%s %q sample %d placed on job log line %d of %d, which does not print %s", p.Key, p.Arm, k, l.First, len(lines), want)
				}
			}
		}
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
