package healthcheck

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// A build installs its package one dependency at a time, each its own two or three
// steps: the dependency's opam file (and source archives) copied in, then `opam
// install` of it. A step's cache key is its parent's and its own content, so every
// job of a run whose dependencies start the same way (Job.Deps puts the most needed
// first) shares those steps' layers: a dependency twenty packages need is built once
// per switch, not twenty times.

// lowerBoundsCriteria are opam's solver criteria for the oldest versions.
const lowerBoundsCriteria = "+removed,+count[version-lag,solution]"

// setupOps make an opam root over an empty local repository and an empty switch,
// the same for every build of every run.
func setupOps() []spec.Op {
	ops := []spec.Op{}
	for _, kv := range [][2]string{{"OPAMROOT", opamenv.Root}, {"OPAMYES", "1"}, {"OPAMCOLOR", "never"},
		{"OPAMERRLOGLEN", "0"}, {"OPAMDOWNLOADJOBS", "1"}, {"OPAMPRECISETRACKING", "1"}} {
		ops = append(ops, spec.Env{Name: kv[0], Value: kv[1]})
	}
	return append(ops, spec.Run{Shell: strings.Join([]string{
		"mkdir -p " + opamenv.RepositoryDir + "/packages",
		`echo 'opam-version: "2.0"' > ` + opamenv.RepositoryDir + "/repo",
		"opam init --bare -n --disable-sandboxing -k local default " + opamenv.RepositoryDir,
		"opam switch create " + opamenv.Switch + " --empty",
	}, " && ")})
}

// step is a shell command that, when it fails, prints the line naming the step and
// package the log's classification reads, and exits with the command's status.
// pkg is a valid name.version: it needs no quoting inside double quotes.
func step(kind, pkg, command string) string {
	return fmt.Sprintf(`(%s) || { s=$?; echo "%s%s %s (exit $s)"; exit $s; }`, command, markerPrefix, kind, pkg)
}

// Layers are the per-package folders a run's builds copy their packages from:
// each package's opam layer (services/internal/opamenv: its opam files and its
// source archives, fetched once through the fleet's archive cache), prepared once
// per run and switch.
type Layers struct {
	Archives *opamenv.Archives
	// Dir holds the prepared layers (under opamenv.ContextDir).
	Dir    string
	GitDir string
	Commit string
	Repo   *repository.Repo
	// Origin are the packages of a switch's extra repositories, with where they are.
	Origin map[opam.Package]ExtraRepo

	mu     sync.Mutex
	layers map[string]opamenv.Layer
}

// Layer prepares (once) the layer of one package.
func (ls *Layers) Layer(ctx context.Context, pkg string) (opamenv.Layer, error) {
	ls.mu.Lock()
	l, ok := ls.layers[pkg]
	ls.mu.Unlock()
	if ok {
		return l, nil
	}
	p, ok := opam.ParsePackage(pkg)
	rp := ls.Repo.Get(p)
	if !ok || rp == nil {
		return opamenv.Layer{}, fmt.Errorf("%s is not in the repository at %.12s", pkg, ls.Commit)
	}
	gitDir, commit := ls.GitDir, ls.Commit
	if o, ok := ls.Origin[p]; ok {
		gitDir, commit = o.GitDir, o.Commit
	}
	pkgs, err := opamenv.FromRepository(ctx, gitDir, commit, []*repository.Package{rp})
	if err != nil {
		return opamenv.Layer{}, err
	}
	l, err = opamenv.Prepare(ctx, ls.Archives, ls.Dir, opamenv.Request{Packages: pkgs})
	if err != nil {
		return opamenv.Layer{}, err
	}
	ls.mu.Lock()
	if ls.layers == nil {
		ls.layers = map[string]opamenv.Layer{}
	}
	ls.layers[pkg] = l
	ls.mu.Unlock()
	return l, nil
}

// Context writes the build context of a job into dir: links to the layers of its
// packages. It returns the layers by package.
func (ls *Layers) Context(ctx context.Context, j Job, dir string) (map[string]opamenv.Layer, error) {
	out := map[string]opamenv.Layer{}
	for _, p := range j.Packages() {
		l, err := ls.Layer(ctx, p)
		if err != nil {
			return nil, &LayerError{Package: p, Err: err}
		}
		if err := linkTree(filepath.Join(ls.Dir, filepath.FromSlash(l.Dir)), filepath.Join(dir, filepath.FromSlash(l.Dir))); err != nil {
			return nil, fmt.Errorf("build context of %s: %w", j.Key(), err)
		}
		out[p] = l
	}
	return out, nil
}

// LayerError is a package's layer that could not be prepared (a source archive
// whose checksum does not match, an unreadable opam file).
type LayerError struct {
	Package string
	Err     error
}

func (e *LayerError) Error() string { return fmt.Sprintf("%s: %v", e.Package, e.Err) }

func (e *LayerError) Unwrap() error { return e.Err }

// linkTree makes dst a copy of src made of hard links.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if err := os.Link(p, to); err != nil && !os.IsExist(err) {
			return err
		}
		return nil
	})
}

// installOps are the steps that install packages together from their layers:
// their opam files and archives copied in, then command.
func installOps(layers map[string]opamenv.Layer, pkgs []string, kind, command string) []spec.Op {
	var ops []spec.Op
	online := false
	for _, p := range pkgs {
		l := layers[p]
		ops = append(ops, spec.Copy{Src: []string{l.Dir + "/repo/packages"}, Dst: opamenv.RepositoryDir + "/"})
		if l.Archives > 0 {
			ops = append(ops, spec.Copy{Src: []string{l.Dir + "/cache"}, Dst: opamenv.Root + "/download-cache"})
		}
		online = online || len(l.Online) > 0
	}
	r := spec.Run{Shell: step(kind, strings.Join(pkgs, ","), "opam update -q default >/dev/null && "+command)}
	if online {
		r.Network = []string{"host"}
	}
	return append(ops, r)
}

// Spec is the builder spec of a job over the layers of its packages (from
// Layers.Context): the shared setup, a step per dependency, then the package built,
// tested and built with its lowest dependencies as the configuration asks.
func Spec(cfg *Config, image string, sw Switch, j Job, layers map[string]opamenv.Layer) (*spec.Spec, error) {
	for _, p := range j.Packages() {
		if _, ok := layers[p]; !ok {
			return nil, fmt.Errorf("job %s: no layer for %s", j.Key(), p)
		}
	}
	s := &spec.Spec{From: image}
	s.Ops = append(s.Ops, setupOps()...)
	for _, g := range j.Deps {
		s.Ops = append(s.Ops, installOps(layers, g, stepDependency, "opam install "+strings.Join(quoteAll(g), " "))...)
	}
	pkg := shellQuote(j.Package)
	all := append([]string{j.Package}, j.With...)
	build := "opam install " + strings.Join(quoteAll(all), " ")
	if sw.BuildWith == BuildWithDune {
		build = "opam install --deps-only " + pkg + " && " + duneBuild(j.Package)
	}
	s.Ops = append(s.Ops, installOps(layers, all, stepBuild, build)...)
	if cfg.WithTest {
		s.Ops = append(s.Ops, spec.Run{Shell: step(stepTest, j.Package, "opam reinstall --with-test --verbose "+pkg)})
	}
	if cfg.LowerBounds {
		for _, v := range []string{"OPAMCRITERIA", "OPAMFIXUPCRITERIA", "OPAMUPGRADECRITERIA"} {
			s.Ops = append(s.Ops, spec.Env{Name: v, Value: lowerBoundsCriteria})
		}
		s.Ops = append(s.Ops, spec.Run{Shell: step(stepLowerBound, j.Package, "opam reinstall "+pkg)})
	}
	return s, s.Validate()
}

// duneBuild builds a package with dune in its own source tree, when it is a dune
// project, and with opam otherwise.
func duneBuild(pkg string) string {
	p, _ := opam.ParsePackage(pkg)
	name := shellQuote(string(p.Name))
	return "opam source " + shellQuote(pkg) + " --dir /tmp/src && cd /tmp/src && " +
		"if [ -f dune-project ]; then opam exec -- dune build -p " + name + " @install; else opam install " + shellQuote(pkg) + "; fi"
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = shellQuote(x)
	}
	return out
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/:=~@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
