package opamref_test

import (
	"context"
	"regexp"
	"slices"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/solver"
)

// solveSample are packages whose installation in an empty switch is compared with
// opam's: common libraries and tools, and packages that need the compiler.
var solveSample = []string{
	"alcotest", "astring", "base", "cmdliner", "cppo", "dune", "fmt", "lwt", "menhir", "num",
	"ocamlbuild", "ocamlfind", "ppxlib", "re", "sexplib", "stdlib-shims", "uutf", "yojson", "zarith", "zed",
	"batteries", "bisect_ppx", "camlzip", "cohttp-lwt-unix", "containers", "ctypes", "dream", "eio_main", "graphql", "irmin",
	"js_of_ocaml", "merlin", "mirage", "ocaml-lsp-server", "ocamlformat", "odoc", "ppx_deriving", "qcheck", "tls", "utop",
}

// solveDifferences are the sample packages whose solution differs from opam's, with
// the reason.
var solveDifferences = map[string]string{}

var installLine = regexp.MustCompile(`(?m)^\s*∗ install\s+(\S+)\s+(\S+)`)

// TestSolveAgrees compares the packages kiln's solver installs for one package in an
// empty switch with those of `opam install --dry-run` (opam's default criteria).
func TestSolveAgrees(t *testing.T) {
	o, r, _ := env(t)
	u := solver.NewUniverse(r, hostPlatform(t, o))
	agree := 0
	for _, name := range solveSample {
		out, err := o.Query(context.Background(), "install", "--dry-run", name)
		if err != nil {
			t.Fatal(err)
		}
		var theirs []string
		for _, m := range installLine.FindAllStringSubmatch(string(out), -1) {
			theirs = append(theirs, m[1]+"."+m[2])
		}
		slices.Sort(theirs)
		var ours []string
		sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: opam.PackageName(name)}}})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, p := range sel.Packages {
			ours = append(ours, p.String())
		}
		slices.Sort(ours)
		if slices.Equal(ours, theirs) {
			agree++
			continue
		}
		if why := solveDifferences[name]; why != "" {
			t.Logf("%s differs (known: %s)", name, why)
			continue
		}
		t.Errorf("%s:\n  only opam: %v\n  only kiln: %v", name, minus(theirs, ours), minus(ours, theirs))
	}
	t.Logf("solutions for %d packages: %d agree with opam", len(solveSample), agree)
}
