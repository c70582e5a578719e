package git

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Repo is a local git repository, bare (a mirror) or with a work tree.
type Repo struct {
	// Dir is the git directory: the bare repository, or the .git folder of a work tree.
	Dir string
	log *slog.Logger
}

// Open opens the repository at dir (a bare repository, or a work tree holding .git).
func Open(ctx context.Context, dir string) (*Repo, error) {
	out, err := command{dir: dir, args: []string{"rev-parse", "--absolute-git-dir"}}.run(ctx)
	if err != nil {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("open repository %s: %w", dir, serr)
		}
		return nil, fmt.Errorf("open repository %s: not a git repository: %w", dir, err)
	}
	return &Repo{Dir: strings.TrimSpace(string(out))}, nil
}

func (r *Repo) git(args ...string) command {
	return command{gitDir: r.Dir, args: args, log: r.log}
}

// Refs lists the refs of the repository whose names start with one of prefixes (all refs
// when none is given), as a map from ref name to commit. Annotated tags map to the commit
// they tag.
func (r *Repo) Refs(ctx context.Context, prefixes ...string) (map[string]string, error) {
	args := append([]string{"for-each-ref", "--format=%(objectname) %(*objectname) %(refname)"}, prefixes...)
	out, err := r.git(args...).run(ctx)
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", r.Dir, err)
	}
	refs := map[string]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch len(f) {
		case 2:
			refs[f[1]] = f[0]
		case 3:
			refs[f[2]] = f[1]
		}
	}
	return refs, nil
}

// Heads lists the branches of the repository: branch ref (refs/heads/...) to commit.
func (r *Repo) Heads(ctx context.Context) (map[string]string, error) {
	return r.Refs(ctx, "refs/heads/")
}

// Resolve returns the commit that rev (a ref, a hash, any git revision) names.
func (r *Repo) Resolve(ctx context.Context, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("resolve %q in %s: a revision cannot start with '-'", rev, r.Dir)
	}
	out, err := r.git("rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}").run(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve %q in %s: %w", rev, r.Dir, ErrNoCommit)
	}
	return strings.TrimSpace(string(out)), nil
}

// HasCommit reports whether the repository holds commit (a full or abbreviated hash).
func (r *Repo) HasCommit(ctx context.Context, commit string) bool {
	if !isHex(commit) {
		return false
	}
	_, err := r.git("cat-file", "-e", commit+"^{commit}").run(ctx)
	return err == nil
}

// Checkout writes the files of commit into dest (created if missing, which must be empty
// or absent), with no .git folder. Files are written exactly as git's checkout would
// (export-ignore attributes have no effect); submodules are left empty.
func (r *Repo) Checkout(ctx context.Context, commit, dest string) error {
	if !isHex(commit) {
		return fmt.Errorf("checkout %q: not a commit hash", commit)
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	if entries, err := os.ReadDir(abs); err == nil && len(entries) > 0 {
		return fmt.Errorf("checkout %s: destination %s is not empty", commit, abs)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	tmp, err := os.MkdirTemp("", "kiln-git-index-")
	if err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	defer os.RemoveAll(tmp)
	env := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "index")}
	wt := "--work-tree=" + abs
	// One command reads the commit's tree into a fresh index and writes its files.
	if _, err := (command{gitDir: r.Dir, env: env, log: r.log, args: []string{wt, "-c", "core.bare=false", "read-tree", "--reset", "-u", commit + "^{commit}"}}).run(ctx); err != nil {
		if ctx.Err() == nil && !r.HasCommit(ctx, commit) {
			return fmt.Errorf("checkout %s from %s: %w", commit, r.Dir, ErrNoCommit)
		}
		return fmt.Errorf("checkout %s into %s: %w", commit, abs, err)
	}
	return nil
}

// TreeEntry is one entry of a tree listing.
type TreeEntry struct {
	Path string      // path from the root of the repository
	Mode fs.FileMode // permissions and type (a symlink, a directory; submodules are directories)
	Type string      // "blob", "tree" or "commit" (a submodule)
	Hash string      // the object's hash
	Size int64       // blob size in bytes (-1 for trees and submodules)
}

// ListTree lists the entries of directory dir ("" for the root) at commit, recursing into
// subdirectories when recursive is set (directories are then not listed themselves).
func (r *Repo) ListTree(ctx context.Context, commit, dir string, recursive bool) ([]TreeEntry, error) {
	if !isHex(commit) {
		return nil, fmt.Errorf("list tree: %q is not a commit hash", commit)
	}
	args := []string{"ls-tree", "-z", "--long", "--full-tree"}
	if recursive {
		args = append(args, "-r")
	}
	args = append(args, commit)
	if dir = strings.Trim(dir, "/"); dir != "" {
		args = append(args, "--", dir+"/")
	}
	out, err := r.git(args...).run(ctx)
	if err != nil {
		if !r.HasCommit(ctx, commit) {
			return nil, fmt.Errorf("list tree of %s: %w", commit, ErrNoCommit)
		}
		return nil, fmt.Errorf("list tree of %s:%s: %w", commit, dir, err)
	}
	var entries []TreeEntry
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 4 {
			return nil, fmt.Errorf("list tree of %s: unexpected line %q", commit, rec)
		}
		e := TreeEntry{Path: string(path), Type: f[1], Hash: f[2], Size: -1}
		if f[3] != "-" {
			e.Size, _ = strconv.ParseInt(f[3], 10, 64)
		}
		e.Mode = gitMode(f[0])
		entries = append(entries, e)
	}
	return entries, nil
}

func gitMode(m string) fs.FileMode {
	switch m {
	case "040000":
		return fs.ModeDir | 0o755
	case "120000":
		return fs.ModeSymlink | 0o777
	case "160000":
		return fs.ModeDir
	case "100755":
		return 0o755
	default:
		return 0o644
	}
}

// ReadFile returns the content of the file at path in commit. A missing file gives an
// error matching fs.ErrNotExist.
func (r *Repo) ReadFile(ctx context.Context, commit, path string) ([]byte, error) {
	files, err := r.ReadFiles(ctx, commit, []string{path})
	if err != nil {
		return nil, err
	}
	data, ok := files[strings.Trim(path, "/")]
	if !ok {
		return nil, fmt.Errorf("read %s at %s: %w", path, short(commit), fs.ErrNotExist)
	}
	return data, nil
}

// ReadFiles returns the contents of the files at paths in commit, read by one git process.
// Paths that are missing, or not files, are absent from the map.
func (r *Repo) ReadFiles(ctx context.Context, commit string, paths []string) (map[string][]byte, error) {
	if !isHex(commit) {
		return nil, fmt.Errorf("read files: %q is not a commit hash", commit)
	}
	if !r.HasCommit(ctx, commit) {
		return nil, fmt.Errorf("read files at %s: %w", commit, ErrNoCommit)
	}
	var in bytes.Buffer
	var asked []string
	for _, p := range paths {
		p = strings.Trim(p, "/")
		if p == "" || strings.ContainsAny(p, "\n") {
			continue
		}
		asked = append(asked, p)
		fmt.Fprintf(&in, "%s:%s\n", commit, p)
	}
	if len(asked) == 0 {
		return map[string][]byte{}, nil
	}
	var out bytes.Buffer
	c := r.git("cat-file", "--batch")
	c.stdin, c.stdout = &in, &out
	if _, err := c.run(ctx); err != nil {
		return nil, fmt.Errorf("read files at %s: %w", short(commit), err)
	}
	files := map[string][]byte{}
	br := bufio.NewReader(&out)
	for _, p := range asked {
		header, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read %s at %s: truncated answer from git cat-file", p, short(commit))
		}
		f := strings.Fields(header)
		if len(f) == 2 && f[1] == "missing" || len(f) >= 2 && f[1] == "ambiguous" {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("read %s at %s: unexpected answer %q from git cat-file", p, short(commit), header)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read %s at %s: bad size in %q", p, short(commit), header)
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("read %s at %s: %w", p, short(commit), err)
		}
		if _, err := br.Discard(1); err != nil {
			return nil, fmt.Errorf("read %s at %s: %w", p, short(commit), err)
		}
		if f[1] == "blob" {
			files[p] = data
		}
	}
	return files, nil
}

func isHex(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
