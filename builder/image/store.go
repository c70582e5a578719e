// Package image provides the base images of builds, the (from REF) of a spec: root
// filesystems pulled from OCI registries, read from rootfs tarballs, or made from the
// Debian mirror and registered under a local name, each kept once by its digest.
//
// References name a source by their form:
//
//	kiln/NAME[:TAG]                 a local base registered with Import or `kiln base`
//	                                (TAG defaults to "latest"); never pulled
//	/abs/rootfs.tar[.gz|.zst|.xz]   a root filesystem tarball (also ./rel, ../rel and
//	file:PATH)
//	anything else                   an OCI or Docker image in a registry
//	                                (debian:bookworm, ocaml/opam@sha256:…, host:port/x:y)
//
// Layout under the store root:
//
//	bases/<hex>/rootfs/   the unpacked root filesystem (read-only by convention)
//	bases/<hex>/base.json the Base record (id, reference, config, size)
//	refs.json             reference → id for local names, tarballs and pulled tags
//	tmp/                  unpacking in progress; cleared on Open
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
)

// LocalPrefix starts references to local bases.
const LocalPrefix = "kiln/"

// Base is a resolved base image.
type Base struct {
	// ID is the base's stable digest, "sha256:<hex>": of the image manifest for
	// registry images, of the tar stream for tarballs and local bases.
	ID string `json:"id"`
	// Ref is the reference it was resolved from (the one it entered the store
	// with, in List and Get); usable as the (from …) of a spec.
	Ref string `json:"ref"`
	// Rootfs is the root filesystem directory; it must not be modified.
	Rootfs string `json:"-"`
	// Config holds the image defaults.
	Config Config `json:"config"`
	// Size is the unpacked size in bytes.
	Size int64 `json:"size"`
	// Created is when the base entered the store.
	Created time.Time `json:"created"`
}

// Config holds the defaults an image gives its builds.
type Config struct {
	Env     []string `json:"env,omitempty"` // KEY=VALUE
	Workdir string   `json:"workdir,omitempty"`
	User    string   `json:"user,omitempty"`
	Arch    string   `json:"arch,omitempty"` // GOARCH naming: amd64, arm64, …
}

// DefaultPath is the PATH of bases whose config sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Store keeps base images under a root directory. It is safe for concurrent use by
// goroutines and by several processes sharing the root.
type Store struct {
	root string
	// Arch is the architecture pulled from multi-architecture images (GOARCH name).
	Arch string
	// Insecure allows plain-HTTP registries (for registries on loopback).
	Insecure bool
	// Progress receives progress of pulls and imports; nil is silent.
	Progress Progress

	flight singleflight.Group
	mu     sync.Mutex
}

// Open opens (creating it if needed) the store at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"bases", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store %s: %w", abs, err)
		}
	}
	s := &Store{root: abs, Arch: runtime.GOARCH}
	// Leftovers of interrupted unpacks; skipped when another process is unpacking.
	s.withLock(func() error {
		entries, _ := os.ReadDir(filepath.Join(abs, "tmp"))
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				removeTree(filepath.Join(abs, "tmp", e.Name()))
			}
		}
		return nil
	})
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// withLock runs f holding the store's lock across processes.
func (s *Store) withLock(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(s.root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	return f()
}

type refEntry struct {
	ID    string    `json:"id"`
	Size  int64     `json:"size,omitempty"`  // tarballs: file size when hashed
	MTime time.Time `json:"mtime,omitempty"` // tarballs: file mtime when hashed
	// Recipe is what made a Debian base (DebianOptions.Recipe): a base made by another
	// recipe is made again by EnsureDebian.
	Recipe string `json:"recipe,omitempty"`
}

func (s *Store) readRefs() (map[string]refEntry, error) {
	refs := map[string]refEntry{}
	b, err := os.ReadFile(filepath.Join(s.root, "refs.json"))
	if errors.Is(err, os.ErrNotExist) {
		return refs, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &refs); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(s.root, "refs.json"), err)
	}
	return refs, nil
}

func (s *Store) lookupRef(key string) (refEntry, bool) {
	var e refEntry
	var ok bool
	s.withLock(func() error {
		refs, err := s.readRefs()
		if err == nil {
			e, ok = refs[key]
		}
		return nil
	})
	return e, ok
}

// setRef records key → e; the caller holds the lock.
func (s *Store) setRef(key string, e refEntry) error {
	refs, err := s.readRefs()
	if err != nil {
		return err
	}
	refs[key] = e
	b, err := json.MarshalIndent(refs, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.root, "refs.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.root, "refs.json"))
}

func hexOf(id string) (string, error) {
	h, ok := strings.CutPrefix(id, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid base id %q (want sha256:<64 hex digits>)", id)
	}
	return h, nil
}

// Get returns the stored base with the given id.
func (s *Store) Get(id string) (Base, error) {
	h, err := hexOf(id)
	if err != nil {
		return Base{}, err
	}
	dir := filepath.Join(s.root, "bases", h)
	b, err := os.ReadFile(filepath.Join(dir, "base.json"))
	if err != nil {
		return Base{}, fmt.Errorf("base %s: %w", id, err)
	}
	var base Base
	if err := json.Unmarshal(b, &base); err != nil {
		return Base{}, fmt.Errorf("base %s: %w", id, err)
	}
	base.Rootfs = filepath.Join(dir, "rootfs")
	return base, nil
}

// List returns the stored bases and the references that name each.
func (s *Store) List() ([]Base, map[string][]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "bases"))
	if err != nil {
		return nil, nil, err
	}
	var out []Base
	for _, e := range entries {
		if b, err := s.Get("sha256:" + e.Name()); err == nil {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	names := map[string][]string{}
	err = s.withLock(func() error {
		refs, err := s.readRefs()
		for k, v := range refs {
			names[v.ID] = append(names[v.ID], k)
		}
		return err
	})
	for _, v := range names {
		sort.Strings(v)
	}
	return out, names, err
}

// Remove deletes a base and the references to it.
func (s *Store) Remove(id string) error {
	h, err := hexOf(id)
	if err != nil {
		return err
	}
	return s.withLock(func() error {
		refs, err := s.readRefs()
		if err != nil {
			return err
		}
		for k, v := range refs {
			if v.ID == id {
				delete(refs, k)
			}
		}
		b, _ := json.MarshalIndent(refs, "", "  ")
		if err := os.WriteFile(filepath.Join(s.root, "refs.json"), b, 0o600); err != nil {
			return err
		}
		return removeTree(filepath.Join(s.root, "bases", h))
	})
}

// Resolve returns the base named by ref, fetching and unpacking it the first time.
// A registry tag resolved before is reused without asking the registry again (use
// Pull to refresh it).
func (s *Store) Resolve(ctx context.Context, ref string) (Base, error) {
	v, err, _ := s.flight.Do(ref, func() (any, error) {
		switch kind, arg := classify(ref); kind {
		case refLocal:
			e, ok := s.lookupRef(arg)
			if !ok {
				return Base{}, fmt.Errorf("base %s: no such local base (make it with `kiln base`)", ref)
			}
			return s.Get(e.ID)
		case refTarball:
			return s.resolveTarball(ctx, arg)
		default:
			if e, ok := s.lookupRef(s.pullKey(ref)); ok {
				if b, err := s.Get(e.ID); err == nil {
					return b, nil
				}
			}
			return s.pull(ctx, ref)
		}
	})
	if err != nil {
		return Base{}, err
	}
	b := v.(Base)
	b.Ref = ref
	return b, nil
}

type refKind int

const (
	refRegistry refKind = iota
	refLocal
	refTarball
)

// classify says what source ref names and returns its canonical argument: the local
// name with its tag, or the tarball's absolute path.
func classify(ref string) (refKind, string) {
	if strings.HasPrefix(ref, LocalPrefix) {
		name := ref
		if !strings.Contains(strings.TrimPrefix(ref, LocalPrefix), ":") {
			name += ":latest"
		}
		return refLocal, name
	}
	p, isFile := strings.CutPrefix(ref, "file:")
	if isFile || strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return refTarball, p
	}
	return refRegistry, ref
}

// LocalName checks and canonicalises a local base name: "kiln/NAME[:TAG]" with
// lower-case letters, digits and ". _ - /" in NAME and letters, digits and ". _ -"
// in TAG. A name without the kiln/ prefix gets it.
func LocalName(name string) (string, error) {
	if !strings.HasPrefix(name, LocalPrefix) {
		name = LocalPrefix + name
	}
	repo, tag, hasTag := strings.Cut(strings.TrimPrefix(name, LocalPrefix), ":")
	if !hasTag {
		tag = "latest"
	}
	if repo == "" || strings.Trim(repo, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != "" ||
		strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") || strings.Contains(repo, "//") {
		return "", fmt.Errorf("invalid local base name %q: want kiln/NAME[:TAG], NAME of a-z 0-9 . _ - /", name)
	}
	if tag == "" || len(tag) > 128 || strings.Trim(strings.ToLower(tag), "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" || strings.HasPrefix(tag, ".") || strings.HasPrefix(tag, "-") {
		return "", fmt.Errorf("invalid tag in local base name %q: want letters, digits, . _ -", name)
	}
	return LocalPrefix + repo + ":" + tag, nil
}

// removeTree deletes a directory tree, making read-only directories writable first.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
