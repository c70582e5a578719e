package ocamlci

import (
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

func TestVariantsAndSpecs(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"hello.opam": helloOpam, "lib/hello-lib.opam": helloOpam, "dune-project": "(lang dune 2.0)\n",
		".ocamlformat": "version = 0.26.2\n",
	})
	a, err := Analyse(dir)
	if err != nil {
		t.Fatal(err)
	}
	vs := Variants(a, matrix.Default(), map[string][]string{"debian-12-4.13_amd64": {"alcotest.1.7.0"}})
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	if got, want := strings.Join(names, ","), "debian-12-4.13_amd64,debian-12-4.13_arm64,(lint-fmt),(lint-doc),(lint-opam)"; got != want {
		t.Fatalf("variants = %s, want %s", got, want)
	}
	vs[0].Opam = &opamenv.Layer{Dir: ".kiln-opam/abc", Compiler: "ocaml-system.4.13.1", Install: vs[0].Install,
		Pins: []opamenv.Pin{{Package: "hello.dev", Target: "/src/"}}}
	s, err := vs[0].Spec(a)
	if err != nil {
		t.Fatal(err)
	}
	text := s.String()
	back, err := spec.ParseString(text)
	if err != nil {
		t.Fatalf("generated spec does not parse: %v\n%s", err, text)
	}
	if back.From != vs[0].Platform.Image {
		t.Errorf("from = %q", back.From)
	}
	// The dependency layer (the switch, the opam files, then opam install of the exact
	// set) comes before the whole tree.
	iInit := strings.Index(text, "opam init --bare")
	iSwitch := strings.Index(text, "opam switch create default ocaml-system.4.13.1")
	iOpam := strings.Index(text, "hello.opam")
	iInstall := strings.Index(text, "opam pin add -yn hello.dev /src/ && opam install alcotest.1.7.0")
	iTree := strings.Index(text, "(src .)")
	iBuild := strings.Index(text, "dune build @install @check @runtest")
	if iInit < 0 || iSwitch < iInit || iOpam < iSwitch || iInstall < iOpam || iTree < iInstall || iBuild < iTree {
		t.Errorf("steps out of order (init %d, switch %d, opam files %d, install %d, tree %d, build %d):\n%s", iInit, iSwitch, iOpam, iInstall, iTree, iBuild, text)
	}
	if strings.Contains(text, "--deps-only") || strings.Contains(text, "network") {
		t.Errorf("the layer installs dependencies of the set, or uses the network:\n%s", text)
	}
	if !strings.Contains(text, "(dst /src/lib/)") {
		t.Errorf("opam file in lib/ not copied to its folder:\n%s", text)
	}
	if !strings.Contains(text, "(exclude .git _build _opam .kiln-opam)") {
		t.Errorf("the tree's copy takes the dependency layers too:\n%s", text)
	}
	// A spec for arm64 has nothing to install: no opam step.
	s2, _ := vs[1].Spec(a)
	if strings.Contains(s2.String(), "opam init") || strings.Contains(s2.String(), "opam install") {
		t.Errorf("arm64 spec runs opam though nothing is installed:\n%s", s2)
	}
	// A platform that cannot have the packages fails with the reason, unbuilt.
	un := vs[1]
	un.Unsolvable = "hello needs alcotest (not provided)"
	if _, err := un.Spec(a); err == nil || err.Error() != un.Unsolvable {
		t.Errorf("spec of an unsolvable variant: %v", err)
	}
	if _, err := vs[4].Spec(a); err == nil {
		t.Error("lint-opam has a spec; it runs in the service")
	}
	off := false
	a.Config.Lint.Doc = &off
	a.OCamlFormat = ""
	if got := len(Variants(a, matrix.Default(), nil)); got != 3 {
		t.Errorf("without fmt and doc lints: %d variants, want 3", got)
	}
}

func TestRebuildsOfACommitGoInTheBackgroundLane(t *testing.T) {
	s := &Service{seen: map[string]string{}}
	b := BuildInput{Checkout: Checkout{Repo: forge.RepoID{Forge: "git", Owner: "o", Name: "r"}, Commit: "c1"}, Variant: Variant{Name: "debian-12-4.13_amd64"}, Spec: "spec A"}
	if !s.firstBuild(b) {
		t.Fatal("the first build of a commit's variant is not urgent")
	}
	if !s.firstBuild(b) {
		t.Fatal("the same build again (a retry) is not urgent")
	}
	b.Spec = "spec B" // opam-repository moved on and the solution changed
	if s.firstBuild(b) {
		t.Fatal("a re-test after an opam-repository change is urgent")
	}
	b.Checkout.Commit = "c2" // a push
	if !s.firstBuild(b) {
		t.Fatal("the first build of a new commit is not urgent")
	}
}

func TestCacheHintNamesTheDependencyLayer(t *testing.T) {
	a := &Analysis{OpamFiles: map[string][]byte{"a.opam": []byte("x")}}
	v := Variant{Platform: matrix.Platform{Name: "p"}, Install: []string{"fmt.0.9"}}
	h := dependencyLayer(a, v)
	a2 := &Analysis{OpamFiles: map[string][]byte{"a.opam": []byte("x")}, Dune: true} // code changes do not matter
	if dependencyLayer(a2, v) != h {
		t.Error("the hint changed with something outside the dependency layer")
	}
	a2.OpamFiles["a.opam"] = []byte("y")
	if dependencyLayer(a2, v) == h {
		t.Error("the hint ignores the opam files")
	}
	v.Install = []string{"fmt.0.10"}
	if dependencyLayer(a, v) == h {
		t.Error("the hint ignores the packages installed")
	}
}
