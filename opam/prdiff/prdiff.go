// Package prdiff analyses a pull request to an opam repository: it merges the head
// into the base, classifies each changed package version (new package, new release,
// deleted, made unavailable, significantly or insignificantly changed), says whether
// it has tests, reports what makes the pull request untestable as it stands (a merge
// conflict, paths that do not belong in a package repository, a malformed opam file,
// a symbolic link, a file too large), and lints the changed packages.
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
	"strconv"
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
	Fields []string `json:"fields,omitempty"`
	// HasTests says whether the opam file has a run-test field or mentions the
	// with-test variable (in a filter of depends, build, ...).
	HasTests bool           `json:"has_tests"`
	Lint     []lint.Finding `json:"lint,omitempty"`
}

// Built reports whether CI builds the change: new packages and releases, and
// significant changes (not deletions, versions made unavailable or metadata edits).
func (c Change) Built() bool {
	return c.Kind == NewPackage || c.Kind == NewRelease || c.Kind == Significant
}

// Reason names why a pull request cannot be tested as it stands.
type Reason string

// The reasons.
const (
	MergeConflict  Reason = "merge-conflict"  // the head does not merge into the base
	UnexpectedPath Reason = "unexpected-path" // a path outside packages/<name>/<name.version>/{opam,files/...}
	MalformedOpam  Reason = "malformed-opam"  // an opam file that does not parse
	Symlink        Reason = "symlink"         // a symbolic link (or a submodule) under packages/
	FileTooLarge   Reason = "file-too-large"  // a file over MaxFileSize
	NoMergeBase    Reason = "no-merge-base"   // the head shares no history with the base
)

// Problem is one reason the pull request cannot be tested as it stands; a result
// with problems is a failed analysis.
type Problem struct {
	Reason  Reason `json:"reason"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s", p.Reason, p.Message) }

// MaxFileSize bounds each file a pull request adds or changes (opam files are further
// bounded by repository.MaxFileSize).
const MaxFileSize = 1 << 20

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
	// Problems make the pull request untestable as it stands (each unexpected path is
	// one too). A merge conflict leaves Merged and Changes empty.
	Problems []Problem `json:"problems,omitempty"`
	// Repo is the index of the merged tree (nil after a merge conflict).
	Repo *repository.Repo `json:"-"`
}

// Failed reports whether the analysis found problems.
func (r *Result) Failed() bool { return len(r.Problems) > 0 }

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

// ConflictError is a merge that conflicts.
type ConflictError struct {
	Base, Head string
	Paths      []string // the conflicting paths
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cannot merge %s into %s, please rebase: conflicts in %s", e.Head, e.Base, strings.Join(e.Paths, ", "))
}

// Merge merges head into base without a worktree and returns the tree id. A conflict
// is a *ConflictError.
func Merge(ctx context.Context, gitDir, base, head string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "merge-tree", "--write-tree", "--no-messages", base, head)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	tree, rest, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		if tree != "" {
			return "", &ConflictError{Base: base, Head: head, Paths: conflictPaths(rest)}
		}
		if strings.Contains(stderr.String(), "unrelated histories") {
			return "", fmt.Errorf("merge %s into %s: %w", head, base, ErrNoMergeBase)
		}
		return "", fmt.Errorf("merge %s into %s: %w: %s", head, base, err, strings.TrimSpace(stderr.String()))
	}
	return tree, nil
}

// conflictPaths reads the paths of git merge-tree's conflicted file info lines
// ("<mode> <object> <stage>\t<path>", up to the first blank line).
func conflictPaths(info string) []string {
	var paths []string
	for _, l := range strings.Split(info, "\n") {
		if l == "" {
			break
		}
		if _, p, ok := strings.Cut(l, "\t"); ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

// Analyse merges head into base in gitDir and classifies what changed. baseRepo, if
// not nil, is the index of base (it saves loading it). What the pull request does
// wrong (a conflict, unexpected paths, ...) is in Result.Problems; the error is for
// failures to read the repository.
func Analyse(ctx context.Context, gitDir, base, head string, baseRepo *repository.Repo, opts Options) (*Result, error) {
	merged, err := Merge(ctx, gitDir, base, head)
	var conflict *ConflictError
	if errors.As(err, &conflict) {
		res := &Result{Base: base, Head: head}
		if id, err := repository.ResolveCommit(ctx, gitDir, base); err == nil {
			res.Base = id
		}
		res.Problems = []Problem{{Reason: MergeConflict, Message: "cannot merge into the base branch, please rebase: conflicts in " + strings.Join(conflict.Paths, ", ")}}
		return res, nil
	}
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
	res := &Result{Base: baseRepo.Commit, Head: head, Merged: merged, Repo: newRepo}
	dirs := map[string]bool{}
	var present []string
	for _, c := range changes {
		if c.Status != 'D' {
			present = append(present, c.Path)
		}
		dir, rest, ok := splitPkgPath(c.Path)
		if !ok || !(rest == "opam" || strings.HasPrefix(rest, "files/")) {
			res.Unexpected = append(res.Unexpected, c.Path)
			if !ok {
				continue
			}
		}
		dirs[dir] = true
	}
	bad, err := checkFiles(ctx, gitDir, merged, present)
	if err != nil {
		return nil, err
	}
	badDir := map[string]bool{}
	for _, p := range bad {
		if dir, _, ok := splitPkgPath(p.Path); ok {
			badDir[dir] = true
		}
	}
	res.Problems = append(res.Problems, bad...)
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	names := lint.NewNames(baseRepo.Names())
	for _, dir := range dirList {
		pk, ok := opam.ParsePackage(dir[strings.LastIndexByte(dir, '/')+1:])
		if !ok || "packages/"+string(pk.Name) != dir[:strings.LastIndexByte(dir, '/')] {
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
		if now != nil && now.File == nil && now.Err != nil {
			res.Problems = append(res.Problems, Problem{Reason: MalformedOpam, Path: dir + "/opam", Message: now.Err.Error()})
		}
		if now != nil && now.File != nil {
			ch.HasTests = HasTests(now.File)
		}
		if now != nil && !opts.NoLint && !badDir[dir] {
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
	for _, p := range res.Unexpected {
		res.Problems = append(res.Problems, Problem{Reason: UnexpectedPath, Path: p,
			Message: fmt.Sprintf("unexpected path %s: a pull request may only change packages/<name>/<name.version>/opam and .../files/...", p)})
	}
	slices.SortStableFunc(res.Problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
	return res, nil
}

// checkFiles lists, of the given paths of tree, the symbolic links, submodules and
// files over MaxFileSize, reading sizes only.
func checkFiles(ctx context.Context, gitDir, tree string, paths []string) ([]Problem, error) {
	var out []Problem
	for len(paths) > 0 {
		n := min(len(paths), 500)
		chunk := paths[:n]
		paths = paths[n:]
		args := append([]string{"--git-dir", gitDir, "ls-tree", "-z", "-l", "--full-tree", tree, "--"}, chunk...)
		cmd := exec.CommandContext(ctx, "git", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		list, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("git ls-tree %s: %w: %s", tree, err, strings.TrimSpace(stderr.String()))
		}
		for _, line := range strings.Split(string(list), "\x00") {
			meta, p, ok := strings.Cut(line, "\t")
			if !ok {
				continue
			}
			f := strings.Fields(meta) // <mode> <type> <object> <size>
			if len(f) != 4 {
				continue
			}
			switch {
			case f[0] == "120000":
				out = append(out, Problem{Reason: Symlink, Path: p, Message: fmt.Sprintf("%s is a symbolic link: a package repository holds plain files only", p)})
			case f[1] != "blob":
				out = append(out, Problem{Reason: Symlink, Path: p, Message: fmt.Sprintf("%s is a %s (a submodule): a package repository holds plain files only", p, f[1])})
			default:
				if size, err := strconv.ParseInt(f[3], 10, 64); err == nil && size > MaxFileSize {
					out = append(out, Problem{Reason: FileTooLarge, Path: p, Message: fmt.Sprintf("%s has %d bytes, more than the %d a file of a package may have", p, size, MaxFileSize)})
				}
			}
		}
	}
	return out, nil
}

// HasTests reports whether an opam file has tests: a run-test field, or the with-test
// variable anywhere (a filter in depends or build, most often).
func HasTests(f *opam.File) bool {
	var walk func(v *opam.Value) bool
	walk = func(v *opam.Value) bool {
		if v.Kind == opam.KIdent && v.S == "with-test" {
			return true
		}
		for i := range v.Sub {
			if walk(&v.Sub[i]) {
				return true
			}
		}
		return false
	}
	var items func([]opam.Item) bool
	items = func(its []opam.Item) bool {
		for i := range its {
			it := &its[i]
			if it.Section != nil {
				if items(it.Section.Items) {
					return true
				}
				continue
			}
			if it.Name == "run-test" && !(it.Value.Kind == opam.KList && len(it.Value.Sub) == 0) || walk(&it.Value) {
				return true
			}
		}
		return false
	}
	return items(f.Items)
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
