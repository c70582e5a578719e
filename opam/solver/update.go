package solver

import (
	"maps"
	"slices"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Update returns the universe of repo, another state of u's repository (a pull
// request merged into it, a later commit), on the same platform with the same flags.
// The package versions repo shares with u.Repo (the same *repository.Package, as
// Repo.Update and repository.New of some of its packages keep them) keep their
// candidates; those of the packages whose versions differ are resolved again, and
// which versions can be installed is found again only among those that depend on
// them, directly or not. The result is the universe NewUniverseFlags makes of repo.
// u is not modified and stays in use.
func (u *Universe) Update(repo *repository.Repo) *Universe {
	old := u.all()
	u.fillListDeps() // shared candidates are only read from now on
	n := &Universe{Repo: repo, Platform: u.Platform, Flags: u.Flags, env: u.env,
		byName: make(map[opam.PackageName][]*Cand, len(old))}
	n.listOnce.Do(func() {}) // each candidate below has its list dependencies
	for name, cs := range old {
		n.byName[name] = cs
	}
	affected := map[*Cand]bool{}
	var queue []opam.PackageName
	for _, name := range changedNames(u.Repo, repo) {
		for _, c := range old[name] {
			for _, a := range c.aux {
				delete(n.byName, a.Name)
			}
		}
		delete(n.byName, name)
		queue = append(queue, name)
		vs := repo.Versions(name)
		if len(vs) == 0 {
			continue
		}
		cs := make([]*Cand, len(vs))
		for i, pk := range vs {
			c := n.resolve(pk, false, false, false)
			cs[i] = c
			affected[c] = true
			for _, a := range c.aux {
				n.byName[a.Name] = []*Cand{a}
				affected[a] = true
			}
		}
		n.byName[name] = cs
	}
	if len(queue) == 0 {
		n.byName = old
		return n
	}
	// The versions whose clauses name a package, by its name.
	users := map[opam.PackageName][]*Cand{}
	for _, cs := range n.byName {
		for _, c := range cs {
			for _, cl := range c.Deps {
				for i, a := range cl {
					if !slices.ContainsFunc(cl[:i], func(b opam.Atom) bool { return b.Name == a.Name }) {
						users[a.Name] = append(users[a.Name], c)
					}
				}
			}
		}
	}
	// What depends on a changed package, directly or not, may change too; the rest
	// depends on nothing that changed. Shared candidates are copied before that.
	fresh := maps.Clone(affected)
	seen := map[opam.PackageName]bool{}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		for _, c := range users[name] {
			if !affected[c] {
				affected[c] = true
				queue = append(queue, c.Name)
			}
		}
	}
	list := make([]*Cand, 0, len(affected))
	copied := map[opam.PackageName]bool{}
	for c := range affected {
		if fresh[c] {
			list = append(list, c)
			continue
		}
		if copied[c.Name] {
			continue
		}
		copied[c.Name] = true
		cs := slices.Clone(n.byName[c.Name])
		for i, x := range cs {
			if affected[x] {
				cp := *x
				cs[i] = &cp
				list = append(list, &cp)
			}
		}
		n.byName[c.Name] = cs
	}
	for _, c := range list {
		c.dead, c.deadWhy = c.Unavailable != "", ""
	}
	n.markDeadAmong(list)
	for _, c := range list {
		n.count(c, nil)
	}
	return n
}

// changedNames lists the packages whose versions differ between two states of a
// repository: a version added, removed, or read again.
func changedNames(a, b *repository.Repo) []opam.PackageName {
	var out []opam.PackageName
	for _, name := range a.Names() {
		if !slices.Equal(a.Versions(name), b.Versions(name)) {
			out = append(out, name)
		}
	}
	for _, name := range b.Names() {
		if len(a.Versions(name)) == 0 {
			out = append(out, name)
		}
	}
	return out
}

// setListDeps reads the dependencies of c as opam's list does (see fillListDeps).
func (u *Universe) setListDeps(c *Cand) {
	if c.Aux || c.Pkg == nil || c.Pkg.File == nil {
		return
	}
	d := opam.DepsEnv{Build: true, WithTest: u.Flags.WithTest, WithDoc: u.Flags.WithDoc, Self: c.Pkg.Package, Vars: u.env}
	if f, err := c.Pkg.File.Depends(); err == nil {
		c.listDeps = d.Resolve(f).Atoms()
	}
}
