package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PackSource makes the canonical tar of a source tree (sorted, no times or owners) and
// returns it with its content digest.
func PackSource(dir string) ([]byte, string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, "", fmt.Errorf("pack %s: %w", p, err)
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(fi.Mode().Perm()), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case fi.Mode().IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return nil, "", fmt.Errorf("pack %s: %w", p, err)
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, t
		default:
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", fmt.Errorf("pack %s: %w", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return nil, "", fmt.Errorf("pack %s: %w", p, err)
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, "", fmt.Errorf("pack %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), "sha256-" + hex.EncodeToString(sum[:]), nil
}

// unpackSource extracts a source tar into dir, refusing paths that leave it.
func unpackSource(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("source archive: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("source archive: entry %q leaves the tree", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		}
	}
}

func (c *Client) sources(ctx context.Context) (jetstream.ObjectStore, error) {
	if c.src != nil {
		return c.src, nil
	}
	os, err := c.js.ObjectStore(ctx, bucketSources)
	if err != nil {
		return nil, fmt.Errorf("source store (is a scheduler running?): %w", err)
	}
	c.src = os
	return os, nil
}

// PutSource uploads a source tree as a content-addressed blob, unless it is stored
// already, and returns the digest to put in Request.Source.
func (c *Client) PutSource(ctx context.Context, dir string) (string, error) {
	data, digest, err := PackSource(dir)
	if err != nil {
		return "", err
	}
	store, err := c.sources(ctx)
	if err != nil {
		return "", err
	}
	if _, err := store.GetInfo(ctx, digest); err == nil {
		return digest, nil
	}
	if _, err := store.PutBytes(ctx, digest, data); err != nil {
		return "", fmt.Errorf("upload source %s: %w", digest, err)
	}
	return digest, nil
}
