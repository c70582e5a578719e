package docker

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// source is one file-system item to copy from the build context.
type source struct {
	rel  string // path inside the context, '/' separated
	dest string // absolute destination inside the image
}

// contextSources checks the sources of a copy and maps each to its destination: a
// destination ending in '/' receives each source under its base name (the contents
// of "."); otherwise the single source becomes the destination.
func contextSources(src []string, dst, workdir string) ([]source, error) {
	if !strings.HasPrefix(dst, "/") {
		dst = path.Join(workdir, dst) + map[bool]string{true: "/"}[strings.HasSuffix(dst, "/")]
	}
	var out []source
	for _, s := range src {
		rel, err := cleanSource(s)
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasSuffix(dst, "/"):
			d := path.Clean(dst)
			if rel != "." {
				d = path.Join(d, path.Base(rel))
			}
			out = append(out, source{rel, d})
		case len(src) == 1:
			out = append(out, source{rel, path.Clean(dst)})
		default:
			return nil, fmt.Errorf("copy: %d sources need a destination ending in '/' (got %q)", len(src), dst)
		}
	}
	return out, nil
}

// cleanSource refuses source paths that leave the context.
func cleanSource(s string) (string, error) {
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return "", fmt.Errorf("copy: source %q: '..' may not be used in source paths", s)
		}
	}
	c := path.Clean(strings.TrimLeft(s, "/"))
	if c == "" {
		c = "."
	}
	return c, nil
}

// checkInside verifies that every directory on the way to rel is a real directory
// (not a symbolic link), so a source can not lead out of the context.
func checkInside(root, rel string) (fs.FileInfo, error) {
	if rel == "." {
		return os.Lstat(root)
	}
	parts := strings.Split(rel, "/")
	p := root
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("copy: source %q not found in the context", rel)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return nil, fmt.Errorf("copy: source %q: %s is not a directory", rel, strings.Join(parts[:i+1], "/"))
		}
		if i == len(parts)-1 {
			return fi, nil
		}
	}
	return nil, fmt.Errorf("copy: bad source %q", rel)
}

// walkSource visits a source and, for a directory, everything below it except the
// excluded base names, in name order, without following symbolic links.
func walkSource(root string, s source, exclude []string, visit func(hostPath, rel string, fi fs.FileInfo) error) error {
	if s.rel != "." && slices.Contains(exclude, path.Base(s.rel)) {
		return nil
	}
	fi, err := checkInside(root, s.rel)
	if err != nil {
		return err
	}
	var walk func(hostPath, rel string, fi fs.FileInfo) error
	walk = func(hostPath, rel string, fi fs.FileInfo) error {
		switch {
		case fi.Mode().IsRegular(), fi.Mode()&fs.ModeSymlink != 0, fi.IsDir():
		default:
			return fmt.Errorf("copy: %s: unsupported file type %v", rel, fi.Mode().Type())
		}
		if err := visit(hostPath, rel, fi); err != nil {
			return err
		}
		if !fi.IsDir() {
			return nil
		}
		entries, err := os.ReadDir(hostPath)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if slices.Contains(exclude, e.Name()) {
				continue
			}
			cfi, err := e.Info()
			if err != nil {
				return err
			}
			if err := walk(filepath.Join(hostPath, e.Name()), path.Join(rel, e.Name()), cfi); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(filepath.Join(root, filepath.FromSlash(s.rel)), ".", fi)
}

// contentDigest is the digest of the copied items: destination paths, types,
// permissions, link targets and file contents (as the runc builder computes it).
func contentDigest(root string, srcs []source, exclude []string) (string, error) {
	h := sha256.New()
	for _, s := range srcs {
		err := walkSource(root, s, exclude, func(hostPath, rel string, fi fs.FileInfo) error {
			mode := fi.Mode()
			fmt.Fprintf(h, "%s\x00%s\x00%o\x00", path.Join(s.dest, rel), mode.Type(), mode.Perm()|mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
			switch {
			case mode&fs.ModeSymlink != 0:
				target, err := os.Readlink(hostPath)
				if err != nil {
					return err
				}
				fmt.Fprintf(h, "link\x00%s\x00", target)
			case mode.IsRegular():
				f, err := os.Open(hostPath)
				if err != nil {
					return err
				}
				fh := sha256.New()
				n, err := io.Copy(fh, f)
				f.Close()
				if err != nil {
					return err
				}
				h.Write([]byte(strconv.FormatInt(n, 10) + "\x00"))
				h.Write(fh.Sum(nil))
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeContextTar writes the copied items as a tar rooted at '/', owned by uid:gid.
func writeContextTar(w io.Writer, root string, srcs []source, exclude []string, uid, gid int) error {
	tw := tar.NewWriter(w)
	for _, s := range srcs {
		err := walkSource(root, s, exclude, func(hostPath, rel string, fi fs.FileInfo) error {
			name := strings.TrimPrefix(path.Join(s.dest, rel), "/")
			if name == "" {
				return nil // never rewrite "/" itself
			}
			h := &tar.Header{Name: name, Uid: uid, Gid: gid, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime()}
			switch {
			case fi.IsDir():
				h.Typeflag = tar.TypeDir
				h.Name += "/"
			case fi.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(hostPath)
				if err != nil {
					return err
				}
				h.Typeflag, h.Linkname = tar.TypeSymlink, target
			default:
				h.Typeflag, h.Size = tar.TypeReg, fi.Size()
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeReg {
				f, err := os.Open(hostPath)
				if err != nil {
					return err
				}
				_, err = io.CopyN(tw, f, fi.Size())
				f.Close()
				if err != nil {
					return fmt.Errorf("copy: %s changed while copying: %w", rel, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// retarget copies a tar stream from `docker cp CONTAINER:SRC -` (entries named
// BASE/…) to tw, landing at dest, owned by uid:gid, skipping excluded base names.
func retarget(tw *tar.Writer, r io.Reader, dest string, exclude []string, uid, gid int) error {
	tr := tar.NewReader(r)
	var prefix string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		if prefix == "" {
			prefix = strings.SplitN(name, "/", 2)[0]
		}
		rest := strings.TrimPrefix(strings.TrimPrefix(name, prefix), "/")
		skip := false
		for _, part := range strings.Split(rest, "/") {
			if slices.Contains(exclude, part) || part == ".." {
				skip = true
			}
		}
		if skip {
			continue
		}
		h.Name = strings.TrimPrefix(path.Join(dest, rest), "/")
		if h.Name == "" {
			continue
		}
		if h.Typeflag == tar.TypeLink {
			lrest := strings.TrimPrefix(strings.TrimPrefix(path.Clean(h.Linkname), prefix), "/")
			h.Linkname = strings.TrimPrefix(path.Join(dest, lrest), "/")
		}
		h.Uid, h.Gid, h.Uname, h.Gname = uid, gid, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	return nil
}
