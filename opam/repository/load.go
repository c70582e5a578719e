package repository

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/opam"
)

// entry is one file under packages/ as found in a tree.
type entry struct {
	path string // slash-separated, from the repository root
	oid  string
}

// pkgDir splits a path under packages/ into the package version directory and the
// path inside it. ok is false for paths not inside packages/<name>/<dir>/.
func pkgDir(path string) (dir, rest string, ok bool) {
	if !strings.HasPrefix(path, "packages/") {
		return "", "", false
	}
	s := path[len("packages/"):]
	i := strings.IndexByte(s, '/')
	if i <= 0 {
		return "", "", false
	}
	j := strings.IndexByte(s[i+1:], '/')
	if j <= 0 {
		return "", "", false
	}
	n := len("packages/") + i + 1 + j
	return path[:n], path[n+1:], true
}

// dirPackage names the package of a version directory path by its last component,
// as opam does.
func dirPackage(dir string) (opam.Package, bool) {
	return opam.ParsePackage(dir[strings.LastIndexByte(dir, '/')+1:])
}

// group gathers the entries into package directories; it returns the packages to
// parse (with OID or Path set) and the stray paths.
func group(entries []entry) (pkgs []*Package, stray []string) {
	byDir := map[string]*Package{}
	var extras []entry
	for _, e := range entries {
		dir, rest, ok := pkgDir(e.path)
		if !ok {
			stray = append(stray, e.path)
			continue
		}
		if rest != "opam" {
			extras = append(extras, e)
			continue
		}
		pk, ok := dirPackage(dir)
		if !ok {
			stray = append(stray, e.path)
			continue
		}
		p := &Package{Package: pk, Path: dir, OID: e.oid}
		byDir[dir] = p
		pkgs = append(pkgs, p)
	}
	for _, e := range extras {
		dir, rest, _ := pkgDir(e.path)
		if p := byDir[dir]; p != nil {
			p.Extra = append(p.Extra, rest)
		} else {
			stray = append(stray, e.path)
		}
	}
	slices.Sort(stray)
	return pkgs, stray
}

// MaxFileSize bounds the size of one opam file in the index (the largest of
// opam-repository is under 24 KiB); a larger file is not read and keeps an error.
const MaxFileSize = 256 << 10

// MaxFields bounds the number of fields (sections and the fields inside them
// included) of one opam file in the index.
const MaxFields = 1000

// tooLarge is the error of a file over MaxFileSize.
func tooLarge(path string, size int64) error {
	return fmt.Errorf("%s/opam: %d bytes, more than the %d an opam file may have", path, size, MaxFileSize)
}

// parse parses p.Data into p.File / p.Err.
func parse(p *Package) {
	if p.Err != nil {
		return
	}
	if len(p.Data) > MaxFileSize {
		p.Err = tooLarge(p.Path, int64(len(p.Data)))
		return
	}
	f, err := opam.Parse(p.Path+"/opam", p.Data)
	if err != nil {
		p.Err = err
		return
	}
	if n := countFields(f.Items); n > MaxFields {
		p.Err = fmt.Errorf("%s/opam: %d fields, more than the %d an opam file may have", p.Path, n, MaxFields)
		return
	}
	p.File = f
}

func countFields(items []opam.Item) int {
	n := len(items)
	for _, it := range items {
		if it.Section != nil {
			n += countFields(it.Section.Items)
		}
	}
	return n
}

// readOpam reads an opam file of at most MaxFileSize bytes.
func readOpam(p *Package, path string) {
	f, err := os.Open(path)
	if err != nil {
		p.Err = err
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > MaxFileSize {
		p.Err = tooLarge(p.Path, st.Size())
		return
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		p.Err = fmt.Errorf("%s/opam: %w", p.Path, err)
		return
	}
	p.Data = data
}

// parseAll parses the packages in parallel.
func parseAll(ctx context.Context, pkgs []*Package) error {
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	ch := make(chan *Package, 256)
	for range workers {
		wg.Go(func() {
			for p := range ch {
				parse(p)
			}
		})
	}
	var err error
	for _, p := range pkgs {
		if err = ctx.Err(); err != nil {
			break
		}
		ch <- p
	}
	close(ch)
	wg.Wait()
	return err
}

// LoadDir indexes the repository checked out in dir (the folder holding packages/).
func LoadDir(ctx context.Context, dir string) (*Repo, error) {
	var entries []entry
	root := filepath.Join(dir, "packages")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		entries = append(entries, entry{path: filepath.ToSlash(rel)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load repository %s: %w", dir, err)
	}
	pkgs, stray := group(entries)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	ch := make(chan *Package, 256)
	for range workers {
		wg.Go(func() {
			for p := range ch {
				readOpam(p, filepath.Join(dir, filepath.FromSlash(p.Path), "opam"))
				parse(p)
			}
		})
	}
	for _, p := range pkgs {
		if ctx.Err() != nil {
			break
		}
		ch <- p
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return newRepo(pkgs, stray), nil
}

// LoadGit indexes the repository at a commit (or any tree-ish) of the git repository
// gitDir (bare or not), reading the objects without a checkout.
func LoadGit(ctx context.Context, gitDir, commit string) (*Repo, error) {
	id, err := revParse(ctx, gitDir, commit)
	if err != nil {
		return nil, err
	}
	entries, err := lsTree(ctx, gitDir, id)
	if err != nil {
		return nil, err
	}
	pkgs, stray := group(entries)
	if err := readBlobs(ctx, gitDir, pkgs); err != nil {
		return nil, err
	}
	r := newRepo(pkgs, stray)
	r.Commit = id
	return r, nil
}
