// Package repository holds an index of an opam package repository: every
// packages/<name>/<name.version>/opam file parsed, with the other files of each package
// directory, loaded from a directory or straight from a git commit, and updated between
// two commits by re-parsing only what changed.
package repository

import (
	"cmp"
	"slices"

	"github.com/kiln-ci/kiln/opam"
)

// Package is one version of a package in a repository.
type Package struct {
	opam.Package
	// Path is the path of the package directory, packages/<name>/<name.version>.
	Path string
	// OID is the git object id of the opam file (empty when loaded from a directory).
	OID string
	// Data is the text of the opam file.
	Data []byte
	// File is the parsed opam file; nil when Err is set.
	File *opam.File
	// Err is the parse error of the opam file, if any.
	Err error
	// Extra lists the other files of the package directory (relative to Path).
	Extra []string
}

// Repo is an immutable index of the packages of a repository at one commit (or one
// directory). Update returns a new Repo sharing what did not change.
type Repo struct {
	// Commit is the git commit the index was loaded from, if any.
	Commit string
	// Stray lists the paths under packages/ that are not in a package version
	// directory (packages/<name>/<name.version>/...).
	Stray  []string
	byName map[opam.PackageName][]*Package // sorted by increasing version
	names  []opam.PackageName              // sorted
	count  int
}

func newRepo(pkgs []*Package, stray []string) *Repo {
	r := &Repo{byName: make(map[opam.PackageName][]*Package, len(pkgs)/4), Stray: stray}
	for _, p := range pkgs {
		r.byName[p.Name] = append(r.byName[p.Name], p)
	}
	for n, vs := range r.byName {
		sortVersions(vs)
		r.names = append(r.names, n)
		r.count += len(vs)
	}
	slices.Sort(r.names)
	return r
}

func sortVersions(vs []*Package) {
	slices.SortFunc(vs, func(a, b *Package) int {
		return cmp.Or(opam.CompareVersions(string(a.Version), string(b.Version)), cmp.Compare(a.Version, b.Version))
	})
}

// Names returns the package names, sorted.
func (r *Repo) Names() []opam.PackageName { return r.names }

// Len returns the number of package versions.
func (r *Repo) Len() int { return r.count }

// Versions returns the versions of a package, oldest first (nil when unknown).
func (r *Repo) Versions(name opam.PackageName) []*Package { return r.byName[name] }

// Latest returns the newest version of a package, or nil.
func (r *Repo) Latest(name opam.PackageName) *Package {
	vs := r.byName[name]
	if len(vs) == 0 {
		return nil
	}
	return vs[len(vs)-1]
}

// Get returns one package version, or nil.
func (r *Repo) Get(p opam.Package) *Package {
	for _, q := range r.byName[p.Name] {
		if q.Version == p.Version {
			return q
		}
	}
	return nil
}

// All calls fn for every package version, by name then version.
func (r *Repo) All(fn func(*Package) bool) {
	for _, n := range r.names {
		for _, p := range r.byName[n] {
			if !fn(p) {
				return
			}
		}
	}
}

// Packages returns every package version, by name then version.
func (r *Repo) Packages() []*Package {
	out := make([]*Package, 0, r.count)
	r.All(func(p *Package) bool { out = append(out, p); return true })
	return out
}

// Errors returns the package versions whose opam file does not parse.
func (r *Repo) Errors() []*Package {
	var out []*Package
	r.All(func(p *Package) bool {
		if p.Err != nil {
			out = append(out, p)
		}
		return true
	})
	return out
}

// WithPackages returns a copy of r in which the given package versions replace those
// of the same name and version (or are added), as when pinning local opam files.
func (r *Repo) WithPackages(pkgs ...*Package) *Repo {
	n := r.clone()
	for _, p := range pkgs {
		n.put(p)
	}
	n.finish()
	return n
}

func (r *Repo) clone() *Repo {
	n := &Repo{Commit: r.Commit, Stray: r.Stray, byName: make(map[opam.PackageName][]*Package, len(r.byName)+8)}
	for k, v := range r.byName {
		n.byName[k] = v
	}
	return n
}

// put adds or replaces p, copying the version slice it changes.
func (r *Repo) put(p *Package) {
	old := r.byName[p.Name]
	vs := make([]*Package, 0, len(old)+1)
	for _, q := range old {
		if q.Version != p.Version {
			vs = append(vs, q)
		}
	}
	vs = append(vs, p)
	sortVersions(vs)
	r.byName[p.Name] = vs
}

func (r *Repo) remove(p opam.Package) {
	old := r.byName[p.Name]
	vs := make([]*Package, 0, len(old))
	for _, q := range old {
		if q.Version != p.Version {
			vs = append(vs, q)
		}
	}
	if len(vs) == 0 {
		delete(r.byName, p.Name)
	} else {
		r.byName[p.Name] = vs
	}
}

func (r *Repo) finish() {
	r.names = r.names[:0:0]
	r.count = 0
	for n, vs := range r.byName {
		r.names = append(r.names, n)
		r.count += len(vs)
	}
	slices.Sort(r.names)
}
