package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
)

// Deps makes the opam layer of a benchmarked project's dependencies: the packages its
// opam files need, solved in an opam repository and installed by the builder in steps
// of their own, before the benchmark, so that a project whose opam files did not
// change reuses the cached layer.
type Deps struct {
	Opam     *opamrepo.Repository
	Archives *opamenv.Archives
	// Platform is the image's: the compiler the switch is made on, the packages the
	// image provides.
	Platform matrix.Platform
}

// opamFiles are the opam files at the top of dir (NAME.opam, or opam for a package
// named after the folder), by path.
func opamFiles(dir string) ([]opamrepo.LocalFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []opamrepo.LocalFile
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".opam")
		if e.Name() == "opam" {
			name, ok = filepath.Base(dir), true
		}
		if !ok || name == "" || e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, opamrepo.LocalFile{Name: opam.PackageName(name), Path: e.Name(), Data: data})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// head is the commit of the followed branch of the opam repository.
func (d *Deps) head(ctx context.Context) (string, error) {
	branch := d.Opam.Branch
	if branch == "" {
		branch = "master"
	}
	out, err := exec.CommandContext(ctx, "git", "--git-dir", d.Opam.GitDir, "rev-parse", "--verify", "refs/heads/"+branch+"^{commit}").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("opam repository %s: branch %s: %v: %s", d.Opam.GitDir, branch, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Layer prepares in the build context ctxDir the layer that installs what the opam
// files of the project in dir need, saying so in log; nil when dir has no opam file.
func (d *Deps) Layer(ctx context.Context, ctxDir, dir string, log io.Writer) (*opamenv.Layer, error) {
	files, err := opamFiles(dir)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	if len(d.Platform.Compiler) == 0 {
		return nil, fmt.Errorf("platform %s names no compiler package to make an opam switch with", d.Platform.Name)
	}
	commit, err := d.head(ctx)
	if err != nil {
		return nil, err
	}
	set, err := d.Opam.Solve(ctx, commit, d.Platform, opamrepo.Local{Files: files})
	if err != nil {
		return nil, fmt.Errorf("dependencies of %s: %w", strings.Join(paths(files), ", "), err)
	}
	idx, err := d.Opam.At(ctx, commit)
	if err != nil {
		return nil, err
	}
	var pkgs []*repository.Package
	for _, name := range set {
		pkg, ok := opam.ParsePackage(name)
		if !ok {
			return nil, fmt.Errorf("solution: %q is not name.version", name)
		}
		rp := idx.Get(pkg)
		if rp == nil {
			return nil, fmt.Errorf("solution: %s is not in the opam repository at %s", name, commit)
		}
		pkgs = append(pkgs, rp)
	}
	lps, err := opamenv.FromRepository(ctx, d.Opam.GitDir, commit, pkgs)
	if err != nil {
		return nil, err
	}
	if d.Archives == nil {
		return nil, errors.New("no source archive cache for the opam layer")
	}
	l, err := opamenv.Prepare(ctx, d.Archives, ctxDir, opamenv.Request{Compiler: d.Platform.Compiler[0], Install: set, Packages: lps})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "kiln-bench: %s: %s\n", strings.Join(paths(files), ", "), l.Describe())
	return &l, nil
}

func paths(files []opamrepo.LocalFile) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}
