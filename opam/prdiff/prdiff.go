// Package prdiff analyses a pull request to an opam repository: it merges the head
// into the base, classifies each changed package version (new package, new release,
// deleted, made unavailable, significantly or insignificantly changed), reports paths
// that do not belong in a package repository, and lints the changed packages.
package prdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Kind classifies a changed package version.
type Kind string

// The kinds of change.
const (
	NewPackage    Kind = "new-package"   // the name did not exist
	NewRelease    Kind = "new-release"   // a new version of an existing name
	Deleted       Kind = "deleted"       // the version was removed
	Unavailable   Kind = "unavailable"   // the version was changed to available: false
	Significant   Kind = "significant"   // a change that can affect a build
	Insignificant Kind = "insignificant" // metadata only (description, maintainer, tags, ...)
)

// Change is one changed package version.
type Change struct {
	Package opam.Package `json:"package"`
	Kind    Kind         `json:"kind"`
	// Fields lists the fields (and files/...) whose change made it significant or
	// insignificant.
	Fields []string       `json:"fields,omitempty"`
	Lint   []lint.Finding `json:"lint,omitempty"`
}

// Result is the analysis of one pull request.
type Result struct {
	Base string `json:"base"`
	Head string `json:"head"`
	// Merged is the tree of the merge of head into base.
	Merged  string   `json:"merged"`
	Changes []Change `json:"changes"`
	// Unexpected lists changed paths that are not package files
	// (packages/<name>/<name.version>/opam or .../files/...).
	Unexpected []string `json:"unexpected,omitempty"`
}

// Counts returns the number of changes of each kind.
func (r *Result) Counts() map[Kind]int {
	m := map[Kind]int{}
	for _, c := range r.Changes {
		m[c.Kind]++
	}
	return m
}

// Options adjust the analysis.
type Options struct {
	// NoLint skips linting.
	NoLint bool
	// Lint is the lint context; its New and Names fields are set per package.
	// The zero value means lint.DefaultContext().
	Lint *lint.Context
}

// insignificant fields cannot affect a build or an install.
var insignificant = map[string]bool{
	"synopsis": true, "description": true, "maintainer": true, "authors": true, "author": true,
	"homepage": true, "bug-reports": true, "dev-repo": true, "doc": true, "tags": true,
	"license": true, "messages": true, "post-messages": true,
}

func isInsignificant(field string) bool {
	return insignificant[field] || strings.HasPrefix(field, "x-")
}

// ErrNoMergeBase is returned when base and head share no history (as happens at the
// edge of a shallow clone).
var ErrNoMergeBase = errors.New("no common history")

// Merge merges head into base without a worktree and returns the tree id.
func Merge(ctx context.Context, gitDir, base, head string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "merge-tree", "--write-tree", "--no-messages", base, head)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	tree, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		if tree != "" {
			return "", fmt.Errorf("merge %s into %s: conflicts (tree %s)", head, base, tree)
		}
		if strings.Contains(stderr.String(), "unrelated histories") {
			return "", fmt.Errorf("merge %s into %s: %w", head, base, ErrNoMergeBase)
		}
		return "", fmt.Errorf("merge %s into %s: %w: %s", head, base, err, strings.TrimSpace(stderr.String()))
	}
	return tree, nil
}

// Analyse merges head into base in gitDir and classifies what changed. baseRepo, if
// not nil, is the index of base (it saves loading it).
func Analyse(ctx context.Context, gitDir, base, head string, baseRepo *repository.Repo, opts Options) (*Result, error) {
	merged, err := Merge(ctx, gitDir, base, head)
	if err != nil {
		return nil, err
	}
	if baseRepo == nil {
		if baseRepo, err = repository.LoadGit(ctx, gitDir, base); err != nil {
			return nil, err
		}
	}
	newRepo, changes, err := baseRepo.Update(ctx, gitDir, merged)
	if err != nil {
		return nil, err
	}
	res := &Result{Base: baseRepo.Commit, Head: head, Merged: merged}
	dirs := map[string]bool{}
	for _, c := range changes {
		dir, rest, ok := splitPkgPath(c.Path)
		if !ok || !(rest == "opam" || strings.HasPrefix(rest, "files/")) {
			res.Unexpected = append(res.Unexpected, c.Path)
			if !ok {
				continue
			}
		}
		dirs[dir] = true
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	names := lint.NewNames(baseRepo.Names())
	for _, dir := range dirList {
		pk, ok := opam.ParsePackage(dir[strings.LastIndexByte(dir, '/')+1:])
		if !ok {
			res.Unexpected = append(res.Unexpected, dir)
			continue
		}
		old, now := baseRepo.Get(pk), newRepo.Get(pk)
		ch := Change{Package: pk}
		switch {
		case now == nil && old == nil:
			continue
		case now == nil:
			ch.Kind = Deleted
		case old == nil:
			ch.Kind = NewRelease
			if len(baseRepo.Versions(pk.Name)) == 0 {
				ch.Kind = NewPackage
			}
		default:
			ch.Kind, ch.Fields = compare(old, now, changes, dir)
		}
		if now != nil && !opts.NoLint {
			lctx := lint.DefaultContext()
			if opts.Lint != nil {
				lctx = *opts.Lint
			}
			lctx.New = ch.Kind == NewPackage
			lctx.Names = names
			for _, tw := range newRepo.Twins(pk) {
				lctx.Twins = append(lctx.Twins, tw.Version)
			}
			in, err := lintInput(ctx, gitDir, merged, dir, pk)
			if err != nil {
				return nil, err
			}
			ch.Lint = lint.Lint(in, lctx)
		}
		res.Changes = append(res.Changes, ch)
	}
	slices.Sort(res.Unexpected)
	res.Unexpected = slices.Compact(res.Unexpected)
	return res, nil
}

func splitPkgPath(p string) (dir, rest string, ok bool) {
	parts := strings.SplitN(p, "/", 4)
	if len(parts) < 4 || parts[0] != "packages" {
		return "", "", false
	}
	return strings.Join(parts[:3], "/"), parts[3], true
}

// compare classifies a modified version.
func compare(old, now *repository.Package, changes []repository.Change, dir string) (Kind, []string) {
	var fields []string
	for _, c := range changes {
		if strings.HasPrefix(c.Path, dir+"/files/") {
			fields = append(fields, c.Path[len(dir)+1:])
		}
	}
	if now.File == nil || old.File == nil {
		return Significant, append(fields, "opam")
	}
	if av, ok := now.File.Field("available"); ok && av.Kind == opam.KBool && !av.B {
		if ov, ok := old.File.Field("available"); !ok || ov.Kind != opam.KBool || ov.B {
			return Unavailable, []string{"available"}
		}
	}
	changed := changedFields(old.File, now.File)
	fields = append(fields, changed...)
	for _, f := range fields {
		if !isInsignificant(f) {
			return Significant, fields
		}
	}
	return Insignificant, fields
}

// changedFields lists the fields and sections that differ between two files.
func changedFields(a, b *opam.File) []string {
	ia, ib := index(a), index(b)
	var out []string
	for k, x := range ia {
		y, ok := ib[k]
		if !ok || !sameItems(x, y) {
			out = append(out, k)
		}
	}
	for k := range ib {
		if _, ok := ia[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func index(f *opam.File) map[string][]*opam.Item {
	m := map[string][]*opam.Item{}
	for i := range f.Items {
		it := &f.Items[i]
		k := it.Name
		if it.Section != nil && it.Section.HasLabel {
			k += " " + it.Section.Label
		}
		m[k] = append(m[k], it)
	}
	return m
}

func sameItems(a, b []*opam.Item) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x := &opam.File{Items: []opam.Item{*a[i]}}
		y := &opam.File{Items: []opam.Item{*b[i]}}
		if !opam.EqualFiles(x, y) {
			return false
		}
	}
	return true
}

func lintInput(ctx context.Context, gitDir, tree, dir string, pk opam.Package) (lint.Input, error) {
	files, err := repository.ReadTree(ctx, gitDir, tree, dir)
	if err != nil {
		return lint.Input{}, fmt.Errorf("read %s: %w", dir, err)
	}
	in := lint.Input{Package: pk, Dir: dir, Files: map[string]lint.File{}}
	for p, b := range files {
		in.Files[p] = lint.File{Data: b.Data, Mode: gitMode(b.Mode)}
	}
	return in, nil
}

func gitMode(m uint32) fs.FileMode {
	switch m {
	case 0o100755:
		return 0o755
	case 0o120000:
		return fs.ModeSymlink | 0o777
	}
	return 0o644
}
