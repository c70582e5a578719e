package repository

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// gitOutput runs git in gitDir and returns its standard output.
func gitOutput(ctx context.Context, gitDir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"--git-dir", gitDir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), gitDir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// revParse resolves a commit, or failing that a tree, to its object id.
func revParse(ctx context.Context, gitDir, rev string) (string, error) {
	if isOID(rev) {
		return rev, nil
	}
	out, err := gitOutput(ctx, gitDir, "rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
	if err != nil {
		out2, err2 := gitOutput(ctx, gitDir, "rev-parse", "--verify", "--end-of-options", rev+"^{tree}")
		if err2 != nil {
			return "", fmt.Errorf("resolve %s: %w", rev, err)
		}
		out = out2
	}
	return strings.TrimSpace(string(out)), nil
}

// Blob is a file read from a git tree.
type Blob struct {
	Mode uint32 // git mode: 0o100644, 0o100755, 0o120000 (symlink)
	OID  string
	Data []byte
}

// ReadTree reads every file under dir (a path inside the repository) at treeish,
// keyed by path relative to dir.
func ReadTree(ctx context.Context, gitDir, treeish, dir string) (map[string]*Blob, error) {
	out, err := gitOutput(ctx, gitDir, "ls-tree", "-r", "-z", "--full-tree", treeish, "--", dir)
	if err != nil {
		return nil, err
	}
	files := map[string]*Blob{}
	var order []*Blob
	var pkgs []*Package
	for _, line := range bytes.Split(out, []byte{0}) {
		tab := bytes.IndexByte(line, '\t')
		if tab < 0 {
			continue
		}
		f := strings.Fields(string(line[:tab]))
		if len(f) != 3 || f[1] != "blob" {
			continue
		}
		mode, _ := strconv.ParseUint(f[0], 8, 32)
		rel := strings.TrimPrefix(strings.TrimPrefix(string(line[tab+1:]), dir), "/")
		b := &Blob{Mode: uint32(mode), OID: f[2]}
		files[rel] = b
		order = append(order, b)
		pkgs = append(pkgs, &Package{OID: f[2], Path: rel})
	}
	if err := catFile(ctx, gitDir, pkgs, nil); err != nil {
		return nil, err
	}
	for i, p := range pkgs {
		order[i].Data = p.Data
	}
	return files, nil
}

// lsTree lists the blobs under packages/ at a commit.
func lsTree(ctx context.Context, gitDir, commit string) ([]entry, error) {
	out, err := gitOutput(ctx, gitDir, "ls-tree", "-r", "-z", "--full-tree", commit, "--", "packages")
	if err != nil {
		return nil, err
	}
	entries := make([]entry, 0, 32768)
	for len(out) > 0 {
		i := bytes.IndexByte(out, 0)
		if i < 0 {
			i = len(out)
		}
		line := out[:i]
		out = out[min(i+1, len(out)):]
		// <mode> SP <type> SP <oid> TAB <path>
		tab := bytes.IndexByte(line, '\t')
		if tab < 0 {
			return nil, fmt.Errorf("git ls-tree %s: bad line %q", commit, line)
		}
		f := strings.Fields(string(line[:tab]))
		if len(f) != 3 || f[1] != "blob" {
			continue
		}
		entries = append(entries, entry{path: string(line[tab+1:]), oid: f[2]})
	}
	return entries, nil
}

// readBlobs fills Data of every package from its OID with one `git cat-file --batch`
// process, parsing the files in parallel as they arrive.
func readBlobs(ctx context.Context, gitDir string, pkgs []*Package) error {
	return catFile(ctx, gitDir, pkgs, parse)
}

// catFile fills Data of every package from its OID, calling each (if not nil) on the
// packages in parallel as their data arrive.
func catFile(ctx context.Context, gitDir string, pkgs []*Package, each func(*Package)) error {
	if len(pkgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "cat-file", "--batch")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git cat-file in %s: %w", gitDir, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		w := bufio.NewWriterSize(stdin, 64<<10)
		for _, p := range pkgs {
			w.WriteString(p.OID)
			w.WriteByte('\n')
		}
		w.Flush()
		stdin.Close()
	})
	ch := make(chan *Package, 256)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for p := range ch {
				if each != nil {
					each(p)
				}
			}
		})
	}
	rerr := func() error {
		defer close(ch)
		r := bufio.NewReaderSize(stdout, 256<<10)
		for _, p := range pkgs {
			hdr, err := r.ReadSlice('\n')
			if err != nil {
				return fmt.Errorf("git cat-file: read %s: %w", p.OID, err)
			}
			f := strings.Fields(string(hdr))
			if len(f) != 3 || f[1] != "blob" {
				return fmt.Errorf("git cat-file: %s: unexpected %q", p.Path, strings.TrimSpace(string(hdr)))
			}
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return fmt.Errorf("git cat-file: bad size in %q", hdr)
			}
			if n > MaxFileSize {
				if _, err := r.Discard(n + 1); err != nil {
					return fmt.Errorf("git cat-file: read %s: %w", p.OID, err)
				}
				p.Data, p.Err = nil, tooLarge(p.Path, int64(n))
				ch <- p
				continue
			}
			data := make([]byte, n+1)
			if _, err := io.ReadFull(r, data); err != nil {
				return fmt.Errorf("git cat-file: read %s: %w", p.OID, err)
			}
			p.Data = data[:n]
			ch <- p
		}
		return nil
	}()
	if rerr != nil {
		cancel()
	}
	io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	wg.Wait()
	if rerr != nil {
		return rerr
	}
	if werr != nil {
		return fmt.Errorf("git cat-file in %s: %w: %s", gitDir, werr, strings.TrimSpace(stderr.String()))
	}
	return ctx.Err()
}

// isOID reports whether s is a full object id (which needs no resolving; git reports
// a missing object when it is used).
func isOID(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ResolveCommit returns the full object id of a commit (or tree) of gitDir.
func ResolveCommit(ctx context.Context, gitDir, rev string) (string, error) {
	return revParse(ctx, gitDir, rev)
}

// Fill reads from gitDir, and parses, the opam files of those pkgs that have neither
// a File nor an Err (see New).
func Fill(ctx context.Context, gitDir string, pkgs []*Package) error {
	var todo []*Package
	for _, p := range pkgs {
		if p.File == nil && p.Err == nil {
			if p.OID == "" {
				return fmt.Errorf("fill %s: no git object id", p.Path)
			}
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	return readBlobs(ctx, gitDir, todo)
}
