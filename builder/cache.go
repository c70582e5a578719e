package builder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-ci/kiln/builder/snapshot"
	"golang.org/x/sys/unix"
)

// Named caches are kept like build steps, in a second snapshot store (caches/store):
// each version of a cache is a snapshot, and caches/<name>.current names the current
// one. A step using a cache works on its own writable layer on top of the current
// version (an overlay: no copying, whatever the cache's size). When the step ends,
// successfully or not, its layer becomes the cache's new version unless another step
// replaced the version it started from first, in which case the layer is dropped — as
// OBuilder does. Versions that are no longer the current one or its ancestors are
// removed once no step uses them.

type cacheCheckout struct {
	b      *Builder
	name   string
	parent string
	work   *snapshot.Work
	dir    string
}

func (b *Builder) cachePointer(name string) string {
	return filepath.Join(b.root, "caches", CacheFileName(name)+".current")
}

// CacheFileName maps a cache id (any string, as in OBuilder) to a file name: the id
// itself when it is made of letters, digits, '.', '_' and '-' (not "." or "..", at most
// 200 bytes), otherwise '%' followed by the id with other bytes written %XX, or, past
// 200 bytes, "%~" and a digest. Different ids get different names, and none holds a
// '/' or leads elsewhere.
func CacheFileName(id string) string {
	if plainCacheName(id) {
		return id
	}
	var b strings.Builder
	b.WriteByte('%')
	for i := 0; i < len(id); i++ {
		if c := id[i]; plainCacheByte(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() > 200 {
		return "%~" + hashID("cache", id)
	}
	return b.String()
}

func plainCacheName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > 200 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if !plainCacheByte(n[i]) {
			return false
		}
	}
	return true
}

func plainCacheByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// cachePrefix is the id prefix of the versions of cache name (names may hold
// characters ids cannot).
func cachePrefix(name string) string { return "c" + hashID("cache", name)[:20] + "-" }

// withCacheLock runs f holding the cache's lock.
func (b *Builder) withCacheLock(name string, f func() error) error {
	lf, err := os.OpenFile(filepath.Join(b.root, "caches", CacheFileName(name)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	return f()
}

func (b *Builder) cacheCurrent(name string) (string, error) {
	data, err := os.ReadFile(b.cachePointer(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(data))
	if _, ok, err := b.cacheStore.Get(id); err != nil || !ok {
		return "", err
	}
	return id, nil
}

func (b *Builder) setCacheCurrent(name, id string) error {
	tmp := b.cachePointer(name) + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, b.cachePointer(name))
}

func newVersionID(name string) string {
	var r [8]byte
	rand.Read(r[:])
	return cachePrefix(name) + hex.EncodeToString(r[:])
}

// checkoutCache returns a writable copy of cache name for one step, creating the cache
// (an empty directory owned by uid:gid) if needed. The run's lease keeps the version it
// starts from.
func (r *run) checkoutCache(ctx context.Context, name string, uid, gid int) (*cacheCheckout, error) {
	b := r.b
	co := &cacheCheckout{b: b, name: name}
	err := b.withCacheLock(name, func() error {
		cur, err := b.cacheCurrent(name)
		if err != nil {
			return err
		}
		if cur == "" {
			empty, err := os.MkdirTemp(filepath.Join(b.root, "caches"), "new-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(empty)
			if err := os.Chown(empty, uid, gid); err != nil {
				return err
			}
			os.Chmod(empty, 0o755)
			cur = newVersionID(name)
			if err := b.cacheStore.Import(ctx, cur, empty, snapshot.Meta{Description: "cache " + name}); err != nil {
				return err
			}
			if err := b.setCacheCurrent(name, cur); err != nil {
				return err
			}
		}
		if err := r.lease.add(cur); err != nil {
			return err
		}
		w, err := b.cacheStore.Prepare(ctx, cur)
		if err != nil {
			return err
		}
		co.parent, co.work, co.dir = cur, w, w.Rootfs()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return co, nil
}

// release makes the step's layer the cache's new version, unless another step replaced
// the version it started from, and removes versions nobody needs any more.
func (co *cacheCheckout) release() {
	b := co.b
	err := b.withCacheLock(co.name, func() error {
		cur, err := b.cacheCurrent(co.name)
		if err != nil || cur != co.parent {
			co.work.Discard()
			return err
		}
		id := newVersionID(co.name)
		if err := co.work.Commit(id, snapshot.Meta{Description: "cache " + co.name}, nil); err != nil {
			return err
		}
		if err := b.setCacheCurrent(co.name, id); err != nil {
			return err
		}
		return b.pruneCache(co.name, id)
	})
	if err != nil {
		co.work.Discard()
		slog.Warn("builder: cache release", "cache", co.name, "err", err)
	}
}

// pruneCache removes the versions of cache name that are neither cur nor its ancestors
// and that no running build uses, leaves first.
func (b *Builder) pruneCache(name, cur string) error {
	metas, err := b.cacheStore.List()
	if err != nil {
		return err
	}
	parent := map[string]string{}
	for _, m := range metas {
		if strings.HasPrefix(m.ID, cachePrefix(name)) {
			parent[m.ID] = m.Parent
		}
	}
	keep := map[string]bool{}
	for id := cur; id != ""; id = parent[id] {
		if keep[id] {
			break
		}
		keep[id] = true
	}
	leased := b.leased()
	for removed := true; removed; {
		removed = false
		children := map[string]int{}
		for _, p := range parent {
			children[p]++
		}
		for id := range parent {
			if !keep[id] && !leased[id] && children[id] == 0 {
				if err := b.cacheStore.Remove(id); err != nil {
					return err
				}
				delete(parent, id)
				removed = true
			}
		}
	}
	return nil
}
