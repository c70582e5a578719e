package ocamlci

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// Kind says what a variant checks.
type Kind string

// The kinds of variant, named as the OCaml service names its jobs.
const (
	KindBuild      Kind = "build"
	KindLintFmt    Kind = "lint-fmt"
	KindLintDoc    Kind = "lint-doc"
	KindLintOpam   Kind = "lint-opam"
	KindLowerBound Kind = "lower-bound"
)

// Variant is one job of a commit: a build on a platform, or a lint.
type Variant struct {
	// Name is shown to users and used in URLs: the platform name for builds,
	// "(lint-fmt)" and the like for lints, "PLATFORM (lower-bound)" for lower bounds.
	Name     string          `json:"name"`
	Kind     Kind            `json:"kind"`
	Platform matrix.Platform `json:"platform"`
	// Install is the exact set the solve chose, as "name.version", installed with opam
	// in the dependency layer (Opam).
	Install []string `json:"install,omitempty"`
	// Opam is the dependency layer, prepared in the commit's checkout when the commit
	// is solved against an opam repository.
	Opam *opamenv.Layer `json:"opam,omitempty"`
	// Unsolvable says why the packages cannot be installed on the platform: the variant
	// fails with it, unbuilt.
	Unsolvable string `json:"unsolvable,omitempty"`
	// Experimental variants do not fail the commit.
	Experimental bool `json:"experimental,omitempty"`
	// Nix is what a Nix variant builds.
	Nix *nixrun.Spec `json:"nix,omitempty"`
}

// srcDir is where the source tree sits inside the sandbox.
const srcDir = "/src"

// buildExcludes are names never copied from a checkout into a build: the dependency
// layers the analysis writes into the checkout among them.
var buildExcludes = []string{".git", "_build", "_opam", opamenv.ContextDir}

// Spec returns the builder spec of a variant for a commit with this analysis. The
// dependency layer (the opam switch with the exact set installed, see opamenv) depends
// on the solution and the opam files alone, so a commit that changes only code reuses
// it; the tree is copied after it.
func (v Variant) Spec(a *Analysis) (*spec.Spec, error) {
	s := &spec.Spec{From: v.Platform.Image}
	add := func(ops ...spec.Op) { s.Ops = append(s.Ops, ops...) }
	add(spec.Comment{Text: v.Name}, spec.Env{Name: "CI", Value: "true"}, spec.Env{Name: "OPAMYES", Value: "1"},
		spec.Workdir{Path: srcDir})
	switch {
	case v.Kind == KindLintOpam:
		return nil, fmt.Errorf("%s: lint-opam runs in the service, not in a sandbox", v.Name)
	case v.Unsolvable != "":
		return nil, errors.New(v.Unsolvable)
	case v.Opam != nil:
		add(v.Opam.Setup()...)
		add(copyOpamFiles(a)...)
		add(v.Opam.InstallOp())
	default:
		add(copyOpamFiles(a)...)
	}
	add(spec.Copy{Src: []string{"."}, Dst: srcDir, Exclude: buildExcludes})
	switch v.Kind {
	case KindBuild, KindLowerBound:
		if a.Dune {
			add(spec.Run{Shell: "dune build @install @check @runtest 2>&1 && rm -rf _build"})
		} else {
			pkgs := make([]string, len(a.Packages))
			copy(pkgs, a.Packages)
			for i, p := range pkgs {
				pkgs[i] = strings.TrimSuffix(p, ".dev")
			}
			add(spec.Run{Shell: "opam pin add -yn --with-version=dev . && opam install -v --with-test " + strings.Join(pkgs, " ")})
		}
		for _, cmd := range a.Config.TestCommands {
			add(spec.Run{Shell: cmd})
		}
	case KindLintFmt:
		if v.Opam == nil {
			return nil, fmt.Errorf("%s: ocamlformat %s comes from an opam repository, and the server has none (kiln serve --opam-repository)", v.Name, a.OCamlFormat)
		}
		add(spec.Run{Shell: "dune build @fmt 2>&1 || (echo 'dune build @fmt failed: run `dune build @fmt --auto-promote` to fix the formatting'; exit 1)"})
	case KindLintDoc:
		add(spec.Run{Shell: "ODOC_WARN_ERROR=true dune build @doc 2>&1 || (echo 'dune build @doc failed: odoc warnings are errors in this lint'; exit 1)"})
	default:
		return nil, fmt.Errorf("variant %s: unknown kind %q", v.Name, v.Kind)
	}
	return s, s.Validate()
}

// copyOpamFiles copies the opam files into the source directory keeping their
// paths, one copy per folder, so the dependency layer's id depends on them alone.
func copyOpamFiles(a *Analysis) []spec.Op {
	byDir := map[string][]string{}
	for rel := range a.OpamFiles {
		d := path.Dir(rel)
		byDir[d] = append(byDir[d], rel)
	}
	dirs := make([]string, 0, len(byDir))
	for d := range byDir {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	var ops []spec.Op
	for _, d := range dirs {
		files := byDir[d]
		sort.Strings(files)
		dst := srcDir + "/"
		if d != "." {
			dst = srcDir + "/" + d + "/"
		}
		ops = append(ops, spec.Copy{Src: files, Dst: dst})
	}
	return ops
}

// Variants lists the jobs of a commit: a build per platform and the lints that
// apply. install gives, per platform name, the packages to install with opam.
func Variants(a *Analysis, platforms []matrix.Platform, install map[string][]string) []Variant {
	var vs []Variant
	for _, p := range platforms {
		vs = append(vs, Variant{Name: p.Name, Kind: KindBuild, Platform: p, Install: install[p.Name], Experimental: p.Experimental})
	}
	if len(platforms) == 0 {
		return vs
	}
	lintOn := platforms[0]
	lint := a.Config.Lint
	if a.Dune && a.OCamlFormat != "" && lint.FmtEnabled() {
		vs = append(vs, Variant{Name: "(lint-fmt)", Kind: KindLintFmt, Platform: lintOn})
	}
	if a.Dune && lint.DocEnabled() && len(a.OpamFiles) > 0 {
		vs = append(vs, Variant{Name: "(lint-doc)", Kind: KindLintDoc, Platform: lintOn, Install: install[lintOn.Name]})
	}
	if lint.OpamEnabled() && len(a.OpamFiles) > 0 {
		vs = append(vs, Variant{Name: "(lint-opam)", Kind: KindLintOpam, Platform: lintOn})
	}
	return vs
}
