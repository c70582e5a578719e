package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// install unpacks a new base with fill into a temporary directory and moves it into
// place as id (computed by fill when id is empty), recording refKey → id. When the
// base already exists the new copy is dropped.
func (s *Store) install(ctx context.Context, ref, refKey string, meta refEntry, cfg Config,
	fill func(ctx context.Context, rootfs string) (id string, size int64, err error)) (Base, error) {
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "base-")
	if err != nil {
		return Base{}, err
	}
	defer removeTree(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return Base{}, err
	}
	source := "registry"
	switch {
	case strings.HasPrefix(refKey, "file:"):
		source = "tarball"
	case strings.HasPrefix(refKey, LocalPrefix):
		source = "import"
	}
	start := time.Now()
	id, size, err := fill(ctx, rootfs)
	if err != nil {
		fetchesTotal.WithLabelValues(source, "error").Inc()
		return Base{}, err
	}
	fetchesTotal.WithLabelValues(source, "ok").Inc()
	fetchSeconds.WithLabelValues(source).Observe(time.Since(start).Seconds())
	unpackedBytes.Add(float64(size))
	h, err := hexOf(id)
	if err != nil {
		return Base{}, err
	}
	if cfg.Arch == "" {
		cfg.Arch = s.Arch
	}
	if len(cfg.Env) == 0 {
		cfg.Env = []string{DefaultPath}
	}
	b := Base{ID: id, Ref: ref, Config: cfg, Size: size, Created: time.Now().UTC()}
	js, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return Base{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "base.json"), js, 0o644); err != nil {
		return Base{}, err
	}
	final := filepath.Join(s.root, "bases", h)
	err = s.withLock(func() error {
		if _, err := os.Stat(filepath.Join(final, "base.json")); errors.Is(err, os.ErrNotExist) {
			removeTree(final)
			if err := os.Rename(tmp, final); err != nil {
				return err
			}
		}
		meta.ID = id
		return s.setRef(refKey, meta)
	})
	if err != nil {
		return Base{}, fmt.Errorf("store base %s: %w", ref, err)
	}
	return s.Get(id)
}

// hashingReader computes the sha256 of what is read through it.
type hashingReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newHashingReader(r io.Reader) *hashingReader {
	return &hashingReader{r: r, h: sha256.New()}
}

func (h *hashingReader) Read(b []byte) (int, error) {
	n, err := h.r.Read(b)
	h.h.Write(b[:n])
	return n, err
}

func (h *hashingReader) id() string { return "sha256:" + hex.EncodeToString(h.h.Sum(nil)) }

// unpackStream unpacks a (possibly compressed) tar stream into rootfs, returning the
// sha256 of the stream as read.
func (s *Store) unpackStream(ctx context.Context, r io.Reader, rootfs string) (string, int64, error) {
	hr := newHashingReader(r)
	dr, err := decompress(hr)
	if err != nil {
		return "", 0, err
	}
	defer dr.Close()
	size, err := unpackTo(ctx, rootfs, dr)
	if err != nil {
		return "", 0, err
	}
	// Read what follows the tar end marker so the digest covers the whole stream.
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return "", 0, err
	}
	return hr.id(), size, nil
}

// Import unpacks a root filesystem tar stream (plain, gzip, zstd or xz) and registers
// it under the local name (see LocalName). The base's id is the digest of the stream.
func (s *Store) Import(ctx context.Context, name string, r io.Reader, cfg Config) (Base, error) {
	name, err := LocalName(name)
	if err != nil {
		return Base{}, err
	}
	total := int64(-1)
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			total = fi.Size()
		}
	}
	p := s.progress()
	p.Start("unpack "+name, total)
	defer p.Done()
	return s.install(ctx, name, name, refEntry{}, cfg, func(ctx context.Context, rootfs string) (string, int64, error) {
		return s.unpackStream(ctx, countingReader{r, p}, rootfs)
	})
}

// Tag gives an existing base another local name.
func (s *Store) Tag(id, name string) error {
	name, err := LocalName(name)
	if err != nil {
		return err
	}
	if _, err := s.Get(id); err != nil {
		return err
	}
	return s.withLock(func() error { return s.setRef(name, refEntry{ID: id}) })
}

func (s *Store) resolveTarball(ctx context.Context, file string) (Base, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return Base{}, fmt.Errorf("base tarball: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Base{}, fmt.Errorf("base tarball %s: not a regular file", file)
	}
	key := "file:" + file
	if e, ok := s.lookupRef(key); ok && e.Size == fi.Size() && e.MTime.Equal(fi.ModTime()) {
		if b, err := s.Get(e.ID); err == nil {
			return b, nil
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return Base{}, fmt.Errorf("base tarball: %w", err)
	}
	defer f.Close()
	p := s.progress()
	p.Start("unpack "+filepath.Base(file), fi.Size())
	defer p.Done()
	b, err := s.install(ctx, key, key, refEntry{Size: fi.Size(), MTime: fi.ModTime()}, Config{},
		func(ctx context.Context, rootfs string) (string, int64, error) {
			return s.unpackStream(ctx, countingReader{f, p}, rootfs)
		})
	if err != nil {
		return Base{}, fmt.Errorf("base tarball %s: %w", file, err)
	}
	return b, nil
}
