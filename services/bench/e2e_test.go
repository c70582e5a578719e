package bench

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
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
	kilnYML  = "bench:\n  command: make -s bench\n  repeats: 5\n"
)

// TestEndToEnd: a real OCaml project whose make bench prints v3 JSON, built and
// benchmarked in the Debian base image with Debian's OCaml: two commits on main, then a
// PR on a real Gitea that makes fib 30 % slower and leaves sort as it was. The
// pipeline follows the Gitea and benchmarks main's head and the PR, interleaved with
// it, in the sandbox. The PR's status, its comment and the PR page flag fib only.
func TestEndToEnd(t *testing.T) {
	testenv.Short(t, "builds an OCaml project in the sandbox and runs a Gitea server")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "tar")
	plat := matrix.Debian("amd64")
	base := imagetest.DebianWith(t, *plat.Debian)
	b, err := builder.New(builder.Options{Root: t.TempDir(), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	sb := Sandbox{Builder: b, Image: base.Ref}

	srv := giteatest.Start(t)
	srv.CreateRepo(t, "ocaml-demo", false)
	work := t.TempDir()
	gitT(t, work, "init", "-q", "-b", "main")
	files := map[string]string{"bench.ml": benchML, "Makefile": makefile, ".kiln.yml": kilnYML, "work": "3000\n"}
	commitFiles(t, work, files, "benchmarks")
	m2 := commitFiles(t, work, map[string]string{"README": "demo\n"}, "readme")
	gitT(t, work, "checkout", "-q", "-b", "slower-fib")
	head := commitFiles(t, work, map[string]string{"work": "3900\n"}, "fib does 30 % more work")
	g := newGiteaBench(t, srv, work, "ocaml-demo", "slower-fib")
	ctx := context.Background()
	repoName := "gitea/" + srv.Admin + "/ocaml-demo"
	// The pipeline follows the Gitea: main's head is benchmarked, then the PR, run
	// interleaved with it, one at a time, in the sandbox.
	state := t.TempDir()
	eng, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	p := &Pipeline{Forges: g.set, Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}), API: g.api,
		Runner: sb, WorkDir: filepath.Join(state, "work")}
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
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs after 15 minutes: %+v", runs)
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
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
