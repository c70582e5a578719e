package repository

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/opam"
)

// Change is one file changed under packages/ between two commits.
type Change struct {
	// Status is git's letter: A (added), M (modified), D (deleted), T (type change).
	Status byte
	Path   string
	OldOID string
	NewOID string
}

// DiffPaths lists the files changed between two commits (renames as delete + add).
func DiffPaths(ctx context.Context, gitDir, from, to string) ([]Change, error) {
	out, err := gitOutput(ctx, gitDir, "diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", from, to)
	if err != nil {
		return nil, err
	}
	var changes []Change
	for len(out) > 0 {
		i := bytes.IndexByte(out, 0)
		if i < 0 {
			return nil, fmt.Errorf("git diff-tree %s %s: truncated output", from, to)
		}
		meta := string(out[:i])
		out = out[i+1:]
		j := bytes.IndexByte(out, 0)
		if j < 0 {
			j = len(out)
		}
		path := string(out[:j])
		out = out[min(j+1, len(out)):]
		f := strings.Fields(strings.TrimPrefix(meta, ":"))
		if len(f) != 5 || f[4] == "" {
			return nil, fmt.Errorf("git diff-tree %s %s: bad line %q", from, to, meta)
		}
		changes = append(changes, Change{Status: f[4][0], Path: path, OldOID: f[2], NewOID: f[3]})
	}
	return changes, nil
}

const nullOID = "0000000000000000000000000000000000000000"

// Update returns the index of commit to of gitDir, built from r (which must have been
// loaded from a commit of the same repository) by re-reading only the files that
// changed. r is not modified. It also returns the changes found.
func (r *Repo) Update(ctx context.Context, gitDir, to string) (*Repo, []Change, error) {
	if r.Commit == "" {
		return nil, nil, fmt.Errorf("update: the index was not loaded from a git commit")
	}
	id, err := revParse(ctx, gitDir, to)
	if err != nil {
		return nil, nil, err
	}
	changes, err := DiffPaths(ctx, gitDir, r.Commit, id)
	if err != nil {
		return nil, nil, err
	}
	n, err := r.apply(ctx, gitDir, changes)
	if err != nil {
		return nil, nil, err
	}
	n.Commit = id
	return n, changes, nil
}

func (r *Repo) apply(ctx context.Context, gitDir string, changes []Change) (*Repo, error) {
	n := r.clone()
	// Package directories touched, with their current state.
	type dirState struct {
		pkg   *Package // the package as it will be (nil if no opam file)
		extra map[string]bool
	}
	dirs := map[string]*dirState{}
	stray := map[string]bool{}
	for _, s := range r.Stray {
		stray[s] = true
	}
	strayChanged := false
	state := func(dir string) *dirState {
		if d := dirs[dir]; d != nil {
			return d
		}
		d := &dirState{extra: map[string]bool{}}
		if pk, ok := dirPackage(dir); ok {
			if old := r.Get(pk); old != nil && old.Path == dir {
				cp := *old
				d.pkg = &cp
				for _, e := range old.Extra {
					d.extra[e] = true
				}
			}
		}
		for s := range stray {
			if strings.HasPrefix(s, dir+"/") {
				d.extra[s[len(dir)+1:]] = true
				delete(stray, s)
				strayChanged = true
			}
		}
		dirs[dir] = d
		return d
	}
	var toRead []*Package
	for _, c := range changes {
		if !strings.HasPrefix(c.Path, "packages/") {
			continue
		}
		dir, rest, ok := pkgDir(c.Path)
		pk, pkOK := opam.Package{}, false
		if ok {
			pk, pkOK = dirPackage(dir)
		}
		if !ok || (rest == "opam" && !pkOK) {
			strayChanged = true
			if c.Status == 'D' {
				delete(stray, c.Path)
			} else {
				stray[c.Path] = true
			}
			continue
		}
		d := state(dir)
		if rest != "opam" {
			if c.Status == 'D' {
				delete(d.extra, rest)
			} else {
				d.extra[rest] = true
			}
			continue
		}
		if c.Status == 'D' || c.NewOID == nullOID {
			d.pkg = nil
			continue
		}
		p := &Package{Package: pk, Path: dir, OID: c.NewOID}
		d.pkg = p
		toRead = append(toRead, p)
	}
	if err := readBlobs(ctx, gitDir, toRead); err != nil {
		return nil, err
	}
	for dir, d := range dirs {
		pk, _ := dirPackage(dir)
		if d.pkg == nil {
			n.remove(pk)
			for e := range d.extra {
				stray[dir+"/"+e] = true
				strayChanged = true
			}
			continue
		}
		d.pkg.Extra = d.pkg.Extra[:0:0]
		for e := range d.extra {
			d.pkg.Extra = append(d.pkg.Extra, e)
		}
		slices.Sort(d.pkg.Extra)
		n.put(d.pkg)
	}
	if strayChanged {
		n.Stray = n.Stray[:0:0]
		for s := range stray {
			n.Stray = append(n.Stray, s)
		}
		slices.Sort(n.Stray)
	}
	n.finish()
	return n, nil
}
