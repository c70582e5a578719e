package ocamlci

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
	"github.com/kiln-ci/kiln/services/internal/opamsourcestest"
	"github.com/prometheus/client_golang/prometheus"
)

// The package sets of the shared data's opam-sources README: with the light set opam
// picks dune 3.22.2, which builds on OCaml 4.13 directly; the full set adds dune 3.24.0,
// which needs a second compiler (4.14.2) built first.
var (
	realLightSet = []string{"ocaml.4.13.1", "ocaml-system.4.13.1", "ocaml-config.2", "base-unix.base", "base-threads.base",
		"base-bigarray.base", "seq.base", "dune.3.22.2", "ocamlfind.1.9.6", "ocamlbuild.0.16.1", "stdlib-shims.0.3.0",
		"ounit2.2.2.7", "ounit.2.2.7", "cppo.1.6.9", "cppo_ocamlbuild.1.6.9", "re.1.12.0"}
	realFullSet = append([]string{"dune.3.24.0", "ocaml-secondary-compiler.4.14.2", "ocamlfind-secondary.1.9.6"}, realLightSet...)
)

// realOpamRepository makes a git opam repository of the packages of set, their
// sources pointing at src.
func realOpamRepository(t *testing.T, src *opamsourcestest.Sources, set []string) string {
	t.Helper()
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "master")
	commitTree(t, dir, "master", src.Repository(t, set), "packages")
	return dir
}

// realProject makes a git repository of a project from its source archive, less the
// folders in remove, plus the files in extra.
func realProject(t *testing.T, src *opamsourcestest.Sources, archive string, remove []string, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", filepath.Join(src.Dir, archive), "-C", dir, "--strip-components=1").CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", archive, err, out)
	}
	for _, r := range remove {
		if err := os.RemoveAll(filepath.Join(dir, r)); err != nil {
			t.Fatal(err)
		}
	}
	gitRun(t, dir, "init", "-q", "-b", "main")
	commitTree(t, dir, "main", extra, "release")
	return dir
}

// realProjectSpec is one of the real projects, made from its source archive.
type realProjectSpec struct {
	name, archive string
	remove        []string          // folders left out
	extra         map[string]string // files added
	code          string            // a source file the code-only push changes
}

var (
	realCppo = realProjectSpec{name: "cppo", archive: "cppo.1.6.9.tar.gz", code: "src/cppo_main.ml"}
	// re 1.12.0 as it is, but for what needs packages outside the data set: its
	// benchmarks (core_bench, which re.opam does not name, so `dune build @check` fails
	// without it), ocamlformat for its .ocamlformat; and its documentation has headings
	// ({6 …}) that odoc rejects, which (lint-doc) reports.
	realRe = realProjectSpec{name: "re", archive: "re.1.12.0.tar.gz", remove: []string{"benchmarks"},
		extra: map[string]string{ConfigFile: "lint:\n  fmt: false\n  doc: false\n"}, code: "lib/core.ml"}
)

// TestRealProjects builds cppo 1.6.9 and re 1.12.0 with their real dependencies
// (the light set: dune 3.22.2), installed by opam inside the sandbox from sources the
// service's archive cache took from a loopback server, and runs their own tests; then
// a code-only push of cppo reuses the dependency layer.
func TestRealProjects(t *testing.T) {
	testRealProjects(t, realLightSet, "dune.3.22.2", realCppo, realRe)
}

// TestRealProjectsFullSet is TestRealProjects with opam's choice over the whole set:
// dune 3.24, which on OCaml 4.13 builds a second compiler (4.14.2) first, about 9
// minutes more on 2 cores. Only re is built: cppo 1.6.9's own tests fail with dune 3.24
// (its line directives read "./file.cppo"). Opt in with KILN_REAL_FULL_SET=1.
func TestRealProjectsFullSet(t *testing.T) {
	if os.Getenv("KILN_REAL_FULL_SET") == "" {
		t.Skip("the full package set builds a second compiler (about 10 minutes on 2 cores); set KILN_REAL_FULL_SET=1 to run it")
	}
	testRealProjects(t, realFullSet, "dune.3.24.0", realRe)
}

func testRealProjects(t *testing.T, set []string, dune string, projects ...realProjectSpec) {
	testenv.Short(t, "installs real opam dependencies and builds real projects in sandboxes")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "tar")
	src := opamsourcestest.Serve(t)
	opamRepo := realOpamRepository(t, src, set)
	git := &forges.Git{Every: 300 * time.Millisecond}
	dirs := map[string]string{}
	for _, p := range projects {
		dirs[p.name] = realProject(t, src, p.archive, p.remove, p.extra)
		git.Repos = append(git.Repos, forges.GitRepo{Owner: "local", Name: p.name, Remote: dirs[p.name]})
	}
	reg := prometheus.NewRegistry()
	archives, err := opamenv.NewArchives(t.TempDir(), opamenv.ArchivesOptions{Register: reg})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h := startCI(t, dirs[projects[0].name], matrix.Default()[:1], func(s *Service) {
		s.Forges = forgeSet("git", git)
		s.Opam = &opamrepo.Repository{GitDir: filepath.Join(opamRepo, ".git"), Branch: "master", Poll: time.Hour}
		s.Archives = archives
	})
	for _, p := range projects {
		h.repo = forge.RepoID{Forge: "git", Owner: "local", Name: p.name}
		head := gitRun(t, dirs[p.name], "rev-parse", "HEAD")
		rec := h.waitCommit(head, 45*time.Minute)
		vs, _ := h.svc.Index.Variants(context.Background(), h.repo, head)
		for _, v := range vs {
			t.Logf("%s %s: %s %s", p.name, v.Name, v.State, v.Finished.Sub(v.Started).Round(time.Second))
		}
		if rec.State != forge.Passed {
			t.Fatalf("%s: %s (%s)\n%s", p.name, rec.State, rec.Title, rec.Summary)
		}
	}
	t.Logf("first push of %d projects, all green: %s", len(projects), time.Since(start).Round(time.Second))

	first := projects[0]
	h.repo = forge.RepoID{Forge: "git", Owner: "local", Name: first.name}
	firstHead := gitRun(t, dirs[first.name], "rev-parse", "HEAD")
	amd, _ := h.svc.Index.Variant(context.Background(), h.repo, firstHead, "debian-12-4.13_amd64")
	logText := readJobLog(t, h.engine, amd.JobID)
	for _, want := range []string{"opam init --bare", "opam switch create default ocaml-system.4.13.1", "opam install ", dune} {
		if !strings.Contains(logText, want) {
			t.Errorf("%s's build log lacks %q", first.name, want)
		}
	}
	if strings.Contains(logText, "--deps-only") {
		t.Errorf("%s's dependency layer installs with --deps-only", first.name)
	}
	total, reqs := 0, src.Requests()
	for p, n := range reqs {
		total += n
		if n > 1 {
			t.Errorf("%s fetched %d times from upstream, want once", p, n)
		}
	}
	t.Logf("upstream: %d requests for %d files", total, len(reqs))

	// A code-only push: the analysis finds every archive in the cache, the build
	// reuses the dependency layer.
	before := archiveLookups(t, reg)
	t.Logf("archive cache after the first push: %v", before)
	pushed := time.Now()
	code, err := os.ReadFile(filepath.Join(dirs[first.name], first.code))
	if err != nil {
		t.Fatal(err)
	}
	second := commitTree(t, dirs[first.name], "main", map[string]string{first.code: "(* a code-only change *)\n" + string(code)}, "code only")
	git.Refresh()
	if rec := h.waitCommit(second, 20*time.Minute); rec.State != forge.Passed {
		t.Fatalf("second push: %s (%s)\n%s", rec.State, rec.Title, rec.Summary)
	}
	t.Logf("second push of %s (code only), all green: %s", first.name, time.Since(pushed).Round(time.Second))
	amd2, _ := h.svc.Index.Variant(context.Background(), h.repo, second, "debian-12-4.13_amd64")
	log2 := readJobLog(t, h.engine, amd2.JobID)
	t.Logf("%s amd64 build: first %s, second %s", first.name, amd.Finished.Sub(amd.Started).Round(time.Second), amd2.Finished.Sub(amd2.Started).Round(time.Second))
	if !stepCached(log2, `(shell "opam pin add -yn`) {
		t.Errorf("the second build did not reuse the dependency layer:\n%s", log2)
	}
	after := archiveLookups(t, reg)
	if after["download"] != before["download"] || after["hit"] <= before["hit"] {
		t.Errorf("archive lookups went from %v to %v: want hits only", before, after)
	}
	t.Logf("archive cache after the second push: %v", after)
}

// archiveLookups reads kiln_opamenv_archive_lookups_total by result.
func archiveLookups(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k, v := range testenv.Metrics(t, reg) {
		if r, ok := strings.CutPrefix(k, "kiln_opamenv_archive_lookups_total{result="); ok {
			out[strings.TrimSuffix(r, "}")] = v
		}
	}
	return out
}

// stepCached reports whether the last step of a build log whose line holds marker came
// from the builder's cache.
func stepCached(log, marker string) bool {
	i := strings.LastIndex(log, marker)
	if i < 0 {
		return false
	}
	j := strings.Index(log[i:], "---> ")
	return j >= 0 && strings.HasPrefix(log[i+j:], "---> using ")
}
