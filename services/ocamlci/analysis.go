package ocamlci

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
)

// Analysis is what kiln learns from a commit's source tree before building it.
type Analysis struct {
	// OpamFiles maps each opam file's path (relative, '/'-separated) to its content.
	OpamFiles map[string][]byte `json:"opam_files"`
	// Packages are the local packages, one per opam file, named by the file
	// (foo.opam or foo/opam) and pinned at version "dev".
	Packages []string `json:"packages"`
	// PinDepends are the pin-depends of the local packages, by package.
	PinDepends []PinDepend `json:"pin_depends,omitempty"`
	// OCamlFormat is the version named in .ocamlformat, empty when there is none or it
	// names no version.
	OCamlFormat string `json:"ocamlformat,omitempty"`
	// Dune reports whether the project builds with dune (a dune-project at the root).
	Dune bool `json:"dune"`
	// MonorepoLocks are opam-monorepo lock files (*.opam.locked with
	// x-opam-monorepo-version), which select the monorepo build.
	MonorepoLocks []string `json:"monorepo_locks,omitempty"`
	// Config is the repository's .kiln.yml (the zero Config when absent).
	Config Config `json:"config"`
}

// PinDepend is a package version a local package pins to a source (a git URL with an
// optional #ref).
type PinDepend struct {
	Package string `json:"package"` // name.version
	URL     string `json:"url"`
}

// maxOpamDepth is how deep below the root opam files are looked for, as the OCaml
// service does: the root and two levels of folders.
const maxOpamDepth = 3

// Analyse reads the source tree checked out at dir. Malformed opam files and
// configuration are errors naming the file.
func Analyse(dir string) (*Analysis, error) {
	a := &Analysis{OpamFiles: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			name := d.Name()
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || strings.HasPrefix(name, "test") ||
				strings.Count(rel, "/")+1 >= maxOpamDepth {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		switch {
		case strings.HasSuffix(rel, ".opam.locked"):
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(data, []byte("x-opam-monorepo-version")) {
				a.MonorepoLocks = append(a.MonorepoLocks, rel)
			}
		case strings.HasSuffix(rel, ".opam") || d.Name() == "opam":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			a.OpamFiles[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("analyse %s: %w", dir, err)
	}
	names := map[string]string{}
	for rel, data := range a.OpamFiles {
		name := packageNameOf(rel)
		if name == "" {
			continue
		}
		if prev, ok := names[name]; ok {
			return nil, fmt.Errorf("%s and %s both define package %s", prev, rel, name)
		}
		names[name] = rel
		f, err := opam.Parse(rel, data)
		if err != nil {
			return nil, err
		}
		pins, err := f.PinDepends()
		if err != nil {
			return nil, fmt.Errorf("%s: pin-depends: %w", rel, err)
		}
		for _, p := range pins {
			a.PinDepends = append(a.PinDepends, PinDepend{Package: p.Package.String(), URL: p.URL})
		}
		a.Packages = append(a.Packages, name+".dev")
	}
	sort.Strings(a.Packages)
	sort.Slice(a.PinDepends, func(i, j int) bool { return a.PinDepends[i].Package < a.PinDepends[j].Package })
	sort.Strings(a.MonorepoLocks)
	if _, err := os.Stat(filepath.Join(dir, "dune-project")); err == nil {
		a.Dune = true
	}
	if a.OCamlFormat, err = ocamlformatVersion(filepath.Join(dir, ".ocamlformat")); err != nil {
		return nil, err
	}
	if a.Config, err = LoadConfig(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, err
	}
	return a, nil
}

// packageNameOf returns the package an opam file defines: "foo" for foo.opam and
// foo/opam, "" for a bare opam file at the root (named by its name field).
func packageNameOf(rel string) string {
	base := filepath.Base(rel)
	if base == "opam" {
		dir := filepath.Dir(rel)
		if dir == "." {
			return ""
		}
		return strings.SplitN(filepath.Base(dir), ".", 2)[0]
	}
	return strings.TrimSuffix(base, ".opam")
}

// ocamlformatVersion reads the version = … line of an .ocamlformat file.
func ocamlformatVersion(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.TrimSpace(k) != "version" {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || strings.ContainsAny(v, " \t\"'") {
			return "", fmt.Errorf(".ocamlformat:%d: malformed version %q", line, v)
		}
		return v, nil
	}
	return "", nil
}

// plan analyses a checked-out commit and decides its variants, logging to logf.
func (s *Service) plan(ctx context.Context, in AnalysisInput, logf func(string, ...any)) (Plan, error) {
	a, err := Analyse(in.Checkout.Dir)
	if err != nil {
		return Plan{}, err
	}
	logf("opam files: %d (%s)", len(a.OpamFiles), strings.Join(a.Packages, ", "))
	if a.OCamlFormat != "" {
		logf("ocamlformat version: %s", a.OCamlFormat)
	}
	if len(a.MonorepoLocks) > 0 {
		logf("opam-monorepo lock files: %s", strings.Join(a.MonorepoLocks, ", "))
	}
	nix, err := nixVariant(in.Checkout.Dir, a, s.NixPool)
	if err != nil {
		return Plan{}, err
	}
	if len(a.OpamFiles) == 0 && nix != nil {
		logf("variant %s", nix.Name)
		return Plan{Analysis: a, Variants: []Variant{*nix}}, nil
	}
	if len(a.OpamFiles) == 0 {
		return Plan{}, errors.New("no opam files found (looked for *.opam and */opam up to two folders down, skipping test* folders)")
	}
	platforms, err := Select(s.Platforms, a.Config.Platforms)
	if err != nil {
		return Plan{}, err
	}
	solve := SystemSolve
	withRepo := s.Opam != nil && in.OpamCommit != ""
	var extra []*repository.Package
	var extraFrom map[string]extraPackage
	if len(a.Config.OpamRepositories) > 0 {
		if !withRepo {
			return Plan{}, fmt.Errorf("%s: opam-repositories need the server to solve against an opam repository (kiln serve --opam-repository)", ConfigFile)
		}
		if extra, extraFrom, err = extraPackages(ctx, s.Mirrors, a.Config.OpamRepositories, logf); err != nil {
			return Plan{}, err
		}
	}
	var pinned []*repository.Package
	if len(a.PinDepends) > 0 {
		if !withRepo {
			return Plan{}, errors.New("pin-depends need the server to solve against an opam repository (kiln serve --opam-repository)")
		}
		if pinned, err = pinnedPackages(ctx, s.Mirrors, a.PinDepends); err != nil {
			return Plan{}, err
		}
		for _, p := range pinned {
			logf("pinned %s (%s)", p.Package, p.Path)
		}
	}
	if withRepo {
		logf("solving against opam-repository %s", short(in.OpamCommit))
		solve = solveWith(s.Opam, in.OpamCommit, false, extra, pinned)
	}
	install := map[string][]string{}
	var solved []matrix.Platform
	var failures []string
	for _, p := range platforms {
		pkgs, err := solve(ctx, a, p)
		if err != nil {
			logf("%s: %v", p.Name, err)
			failures = append(failures, fmt.Sprintf("%s: %v", p.Name, err))
			continue
		}
		logf("%s: solved; the set to install with opam: %s", p.Name, orNone(pkgs))
		install[p.Name] = pkgs
		solved = append(solved, p)
	}
	var plan Plan
	switch {
	case len(solved) > 0:
		plan = Plan{Analysis: a, Variants: Variants(a, solved, install)}
	case withRepo:
		return Plan{}, fmt.Errorf("no platform can install the packages:\n%s", strings.Join(failures, "\n"))
	default:
		// Nothing to install the dependencies from: the builds fail with the reason
		// (and the hint at --opam-repository), the lints that need no build still run.
		plan = Plan{Analysis: a, Variants: unsolvable(a, platforms, failures)}
	}
	if withRepo && a.Config.Lint.LowerBoundEnabled() {
		p := solved[0]
		lower, err := solveWith(s.Opam, in.OpamCommit, true, extra, pinned)(ctx, a, p)
		switch {
		case err != nil:
			logf("%s: no lower-bounds solution: %v", p.Name, err)
		case strings.Join(lower, " ") == strings.Join(install[p.Name], " "):
			logf("%s: the lower bounds are the newest versions; no (lower-bound) job", p.Name)
		default:
			logf("%s (lower-bound): the set to install with opam: %s", p.Name, orNone(lower))
			plan.Variants = append(plan.Variants, Variant{Name: p.Name + " (lower-bound)", Kind: KindLowerBound, Platform: p, Install: lower})
		}
	}
	plan.Variants = s.lintFmt(ctx, in, a, plan.Variants, logf)
	if withRepo {
		if err := s.prepareLayers(ctx, in, a, plan.Variants, extraFrom, logf); err != nil {
			return Plan{}, err
		}
	}
	for _, rel := range sortedKeys(a.OpamFiles) {
		plan.Findings = append(plan.Findings, lint.LintProjectFile(rel, a.OpamFiles[rel])...)
	}
	if nix != nil {
		plan.Variants = append(plan.Variants, *nix)
	}
	for _, v := range plan.Variants {
		logf("variant %s", v.Name)
	}
	return plan, nil
}

// unsolvable are the variants of a commit whose packages no platform can install
// without an opam repository: a build per platform that fails with the reason, and the
// opam lint, which needs no build.
func unsolvable(a *Analysis, platforms []matrix.Platform, failures []string) []Variant {
	var vs []Variant
	for i, p := range platforms {
		vs = append(vs, Variant{Name: p.Name, Kind: KindBuild, Platform: p, Unsolvable: failures[i], Experimental: p.Experimental})
	}
	if a.Config.Lint.OpamEnabled() && len(platforms) > 0 {
		vs = append(vs, Variant{Name: "(lint-opam)", Kind: KindLintOpam, Platform: platforms[0]})
	}
	return vs
}

// lintFmt gives the (lint-fmt) variant the set that installs the ocamlformat version the
// project names (with dune); without an opam repository there is no such set, and no
// (lint-fmt).
func (s *Service) lintFmt(ctx context.Context, in AnalysisInput, a *Analysis, vs []Variant, logf func(string, ...any)) []Variant {
	out := vs[:0]
	for _, v := range vs {
		if v.Kind != KindLintFmt {
			out = append(out, v)
			continue
		}
		if s.Opam == nil || in.OpamCommit == "" {
			logf("(lint-fmt): no opam repository to install ocamlformat %s from (kiln serve --opam-repository); no (lint-fmt) job", a.OCamlFormat)
			continue
		}
		tool := []opam.Atom{{Name: "ocamlformat", Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: opam.Version(a.OCamlFormat)})}, {Name: "dune"}}
		set, err := s.Opam.Solve(ctx, in.OpamCommit, v.Platform, opamrepo.Local{Also: tool})
		if err != nil {
			v.Unsolvable = fmt.Sprintf("ocamlformat %s (.ocamlformat) cannot be installed on %s: %v", a.OCamlFormat, v.Platform.Name, err)
		} else {
			logf("(lint-fmt): the set to install with opam: %s", strings.Join(set, " "))
			v.Install = set
		}
		out = append(out, v)
	}
	return out
}

// prepareLayers prepares the dependency layer of every variant that installs packages,
// once per platform and set.
func (s *Service) prepareLayers(ctx context.Context, in AnalysisInput, a *Analysis, vs []Variant, extra map[string]extraPackage, logf func(string, ...any)) error {
	made := map[string]*opamenv.Layer{}
	for i, v := range vs {
		if len(v.Install) == 0 || v.Kind == KindLintOpam {
			continue
		}
		key := v.Platform.Name + " " + strings.Join(v.Install, " ")
		if made[key] == nil {
			l, err := s.layerOf(ctx, in.Checkout.Dir, in.OpamCommit, a, v.Platform, v.Install, extra)
			if err != nil {
				return fmt.Errorf("%s: dependency layer: %w", v.Name, err)
			}
			logf("%s: %s", v.Name, l.Describe())
			made[key] = l
		}
		vs[i].Opam = made[key]
	}
	return nil
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "(none)"
	}
	return strings.Join(xs, " ")
}

// SystemSolve accepts a commit whose local packages depend only on each other and on
// the packages the platform's image provides, with nothing to install.
func SystemSolve(_ context.Context, a *Analysis, p matrix.Platform) ([]string, error) {
	have := map[opam.PackageName]opam.Version{}
	for _, s := range p.System {
		pkg, ok := opam.ParsePackage(s)
		if !ok {
			return nil, fmt.Errorf("platform %s: system package %q is not name.version", p.Name, s)
		}
		have[pkg.Name] = pkg.Version
	}
	for rel := range a.OpamFiles {
		have[opam.PackageName(packageNameOf(rel))] = "dev"
	}
	installed := func(n opam.PackageName) (opam.Version, bool) { v, ok := have[n]; return v, ok }
	var problems []string
	for _, rel := range sortedKeys(a.OpamFiles) {
		f, err := opam.Parse(rel, a.OpamFiles[rel])
		if err != nil {
			return nil, err
		}
		deps, err := f.Depends()
		if err != nil {
			return nil, fmt.Errorf("%s: depends: %w", rel, err)
		}
		self := opam.Package{Name: opam.PackageName(packageNameOf(rel)), Version: "dev"}
		env := opam.DepsEnv{Build: true, WithTest: true, Dev: true, Self: self, Vars: opam.MapEnv(p.Vars)}
		resolved := env.Resolve(deps)
		if !opam.Satisfied(resolved, installed) {
			var unmet []string
			for _, atom := range resolved.Atoms() {
				if v, ok := have[atom.Name]; !ok {
					unmet = append(unmet, string(atom.Name)+" (not provided)")
				} else if !atom.MatchesVersion(v) {
					unmet = append(unmet, fmt.Sprintf("%s (the platform has %s)", atom, v))
				}
			}
			problems = append(problems, fmt.Sprintf("%s needs %s", self.Name, strings.Join(unmet, ", ")))
		}
		if avail, err := f.Available(); err == nil && !avail.EvalBool(env.Env(), true) {
			problems = append(problems, fmt.Sprintf("%s is not available (available: %s)", self.Name, avail))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s; the platform provides only %s, and no opam repository is configured to install the rest from (kiln serve --opam-repository)", strings.Join(problems, "; "), strings.Join(p.System, ", "))
	}
	return nil, nil
}
