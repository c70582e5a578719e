package builder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A named cache lives in caches/<name>/current. Each step using it works on its own
// copy (copy-on-use, with reflinks where the file system has them); when the step ends
// the copy becomes the new current version unless another step replaced it first, in
// which case the copy is dropped. Generations in caches/<name>/gen tell the two apart.

type cacheCheckout struct {
	b    *Builder
	name string
	dir  string
	gen  int
}

func (b *Builder) cacheDir(name string) string { return filepath.Join(b.root, "caches", name) }

// withCacheLock runs f holding the cache's lock, shared or exclusive.
func (b *Builder) withCacheLock(name string, how int, f func() error) error {
	lf, err := os.OpenFile(filepath.Join(b.root, "caches", name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), how); err != nil {
		return err
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	return f()
}

func (b *Builder) cacheGen(name string) int {
	data, _ := os.ReadFile(filepath.Join(b.cacheDir(name), "gen"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// checkoutCache returns a private copy of cache name for one step, creating the cache
// (owned by uid:gid) if needed.
func (b *Builder) checkoutCache(ctx context.Context, name string, uid, gid int) (*cacheCheckout, error) {
	dir := b.cacheDir(name)
	cur := filepath.Join(dir, "current")
	err := b.withCacheLock(name, unix.LOCK_EX, func() error {
		if _, err := os.Stat(cur); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(cur, 0o755); err != nil {
				return err
			}
			return os.Chown(cur, uid, gid)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var rb [6]byte
	rand.Read(rb[:])
	co := &cacheCheckout{b: b, name: name, dir: filepath.Join(dir, "use-"+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rb[:]))}
	err = b.withCacheLock(name, unix.LOCK_SH, func() error {
		co.gen = b.cacheGen(name)
		out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", cur, co.dir).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "No space left") {
				return fmt.Errorf("copy cache: %w", unix.ENOSPC)
			}
			return fmt.Errorf("copy cache: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	if err != nil {
		os.RemoveAll(co.dir)
		return nil, err
	}
	return co, nil
}

// release makes the step's copy the cache's current version, unless another step did
// so first.
func (co *cacheCheckout) release() {
	var old string
	co.b.withCacheLock(co.name, unix.LOCK_EX, func() error {
		dir := co.b.cacheDir(co.name)
		if co.b.cacheGen(co.name) != co.gen {
			return nil
		}
		old = filepath.Join(dir, "old-"+filepath.Base(co.dir))
		if err := os.Rename(filepath.Join(dir, "current"), old); err != nil {
			old = ""
			return err
		}
		if err := os.Rename(co.dir, filepath.Join(dir, "current")); err != nil {
			os.Rename(old, filepath.Join(dir, "current"))
			old = ""
			return err
		}
		co.dir = ""
		return os.WriteFile(filepath.Join(dir, "gen"), []byte(strconv.Itoa(co.gen+1)), 0o600)
	})
	if old != "" {
		os.RemoveAll(old)
	}
	if co.dir != "" {
		os.RemoveAll(co.dir)
	}
}
