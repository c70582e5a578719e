// Package repository holds an index of an opam package repository: every
// packages/<name>/<name.version>/opam file parsed, with the other files of each package
// directory, loaded from a directory or straight from a git commit, and updated between
// two commits by re-parsing only what changed.
package repository

import (
	"cmp"
	"maps"
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
	// shadowed holds, by name, the versions opam does not see because another
	// version of the package is equal to them as opam compares versions.
	shadowed map[opam.PackageName][]*Package
	names    []opam.PackageName // sorted
	count    int
}

func newRepo(pkgs []*Package, stray []string) *Repo {
	r := &Repo{byName: make(map[opam.PackageName][]*Package, len(pkgs)/4), Stray: stray}
	for _, p := range pkgs {
		r.byName[p.Name] = append(r.byName[p.Name], p)
	}
	for n, vs := range r.byName {
		r.setVersions(n, vs)
	}
	r.finish()
	return r
}

// setVersions makes vs (every version directory of a package) the versions of name:
// of versions opam considers equal (`1.0` and `1.00`, `5.5.0+x` and `5.5.0+x0`: it
// ignores leading zeros, and a missing number counts as 0), it keeps the one whose
// directory sorts last, as opam 2.2 and later do when they read a repository; the
// others are shadowed.
func (r *Repo) setVersions(name opam.PackageName, vs []*Package) {
	sortVersions(vs)
	var shadow []*Package
	kept := vs[:0:0]
	for i, p := range vs {
		if i+1 < len(vs) && opam.CompareVersions(string(p.Version), string(vs[i+1].Version)) == 0 {
			shadow = append(shadow, p)
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		delete(r.byName, name)
	} else {
		r.byName[name] = kept
	}
	if len(shadow) > 0 || r.shadowed[name] != nil {
		if r.shadowed == nil {
			r.shadowed = map[opam.PackageName][]*Package{}
		}
		if len(shadow) == 0 {
			delete(r.shadowed, name)
		} else {
			r.shadowed[name] = shadow
		}
	}
}

// Shadowed returns the package versions opam does not see, each because another
// version of its package is equal to it as opam compares versions, by name then
// version.
func (r *Repo) Shadowed() []*Package {
	var out []*Package
	for _, n := range slices.Sorted(maps.Keys(r.shadowed)) {
		out = append(out, r.shadowed[n]...)
	}
	return out
}

// Twins returns the other version directories of p's package whose versions opam
// considers equal to p's (shadowed ones included), oldest directory first.
func (r *Repo) Twins(p opam.Package) []*Package {
	var out []*Package
	for _, q := range r.allVersions(p.Name) {
		if q.Version != p.Version && opam.CompareVersions(string(q.Version), string(p.Version)) == 0 {
			out = append(out, q)
		}
	}
	sortVersions(out)
	return out
}

// allVersions returns the versions of name, shadowed ones included, in no order.
func (r *Repo) allVersions(name opam.PackageName) []*Package {
	sh := r.shadowed[name]
	if len(sh) == 0 {
		return r.byName[name]
	}
	return append(slices.Clone(r.byName[name]), sh...)
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

// Get returns one package version (its directory is named by exactly p; it may be
// shadowed), or nil.
func (r *Repo) Get(p opam.Package) *Package {
	for _, q := range r.byName[p.Name] {
		if q.Version == p.Version {
			return q
		}
	}
	for _, q := range r.shadowed[p.Name] {
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
	n := &Repo{Commit: r.Commit, Stray: r.Stray, byName: maps.Clone(r.byName), shadowed: maps.Clone(r.shadowed)}
	return n
}

// put adds or replaces p, copying the version slice it changes.
func (r *Repo) put(p *Package) {
	vs := r.without(p.Package)
	r.setVersions(p.Name, append(vs, p))
}

func (r *Repo) remove(p opam.Package) {
	r.setVersions(p.Name, r.without(p))
}

// without returns a new slice of the versions of p's package (shadowed ones
// included) but p.
func (r *Repo) without(p opam.Package) []*Package {
	old := r.allVersions(p.Name)
	vs := make([]*Package, 0, len(old)+1)
	for _, q := range old {
		if q.Version != p.Version {
			vs = append(vs, q)
		}
	}
	return vs
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

// New makes the index of the given package versions at commit, as loaded earlier
// (for example from a cache). A package's File may be nil with no Err: Fill reads it
// when it is needed.
func New(commit string, pkgs []*Package, stray []string) *Repo {
	r := newRepo(pkgs, stray)
	r.Commit = commit
	return r
}
