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
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
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
// PR on a real Gitea that makes fib 30 % slower and leaves sort as it was, benchmarked
// interleaved with its base. The PR's status, its comment and the PR page flag fib
// only.
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
	m1 := commitFiles(t, work, files, "benchmarks")
	m2 := commitFiles(t, work, map[string]string{"README": "demo\n"}, "readme")
	gitT(t, work, "checkout", "-q", "-b", "slower-fib")
	head := commitFiles(t, work, map[string]string{"work": "3900\n"}, "fib does 30 % more work")
	g := newGiteaBench(t, srv, work, "ocaml-demo", "slower-fib")
	ctx := context.Background()
	repoName := "gitea/" + srv.Admin + "/ocaml-demo"
	cfg, _, err := ParseConfig([]byte(kilnYML))
	if err != nil {
		t.Fatal(err)
	}
	checkout := func(commit string) string {
		dir := filepath.Join(t.TempDir(), "src")
		gitT(t, work, "worktree", "add", "-q", "--detach", dir, commit)
		return dir
	}
	run := func(r store.Run, job Job) {
		t.Helper()
		job.Command, job.Repeats, job.Timeout = cfg.Command, cfg.Repeats, 5*time.Minute
		var log strings.Builder
		start := time.Now()
		o := sb.Run(ctx, job, &log)
		if o.Err != nil {
			t.Fatalf("%s: %v\n%s", r.Commit, o.Err, log.String())
		}
		resp, err := g.api.Record(ctx, r, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%.8s: %d metrics in %s", r.Commit, resp.Metrics, time.Since(start).Round(time.Millisecond))
		if resp.Metrics != 2 {
			t.Fatalf("%d metrics, want 2:\n%s", resp.Metrics, log.String())
		}
	}
	t0 := time.Now().Add(-time.Hour)
	run(store.Run{Repo: repoName, Branch: "main", Commit: m1, CommitTime: t0}, Job{Dir: checkout(m1)})
	run(store.Run{Repo: repoName, Branch: "main", Commit: m2, CommitTime: t0.Add(time.Minute)}, Job{Dir: checkout(m2)})
	run(store.Run{Repo: repoName, PR: g.pr, Commit: head, Base: m2, CommitTime: t0.Add(2 * time.Minute), Env: "debian-12"},
		Job{Dir: checkout(head), BaseDir: checkout(m2)})

	t.Run("PR status flags fib only", func(t *testing.T) {
		sts, err := g.client.Statuses(ctx, g.repo, head)
		if err != nil {
			t.Fatal(err)
		}
		st := sts["kiln-bench (debian-12)"]
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
