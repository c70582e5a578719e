package builder

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A lease protects the snapshots a running build uses from garbage collection, across
// processes: each build appends the ids it uses to its own file in leases/, locked while
// the build runs. Collection ignores files whose lock is free (their build is gone).
// Taking a lease and checking the snapshot exists happen under the store's shared lock;
// a collection pass holds it exclusively.
type lease struct {
	b    *Builder
	f    *os.File
	mu   sync.Mutex
	seen map[string]bool
}

func (b *Builder) newLease() (*lease, error) {
	var r [8]byte
	rand.Read(r[:])
	p := filepath.Join(b.root, "leases", fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(r[:])))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lease: %w", err)
	}
	return &lease{b: b, f: f, seen: map[string]bool{}}, nil
}

// add leases id. The caller then checks whether it exists.
func (l *lease) add(id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[id] {
		return nil
	}
	return l.b.withStoreLock(unix.LOCK_SH, func() error {
		if _, err := l.f.WriteString(id + "\n"); err != nil {
			return fmt.Errorf("lease: %w", err)
		}
		l.seen[id] = true
		return nil
	})
}

func (l *lease) release() {
	os.Remove(l.f.Name())
	l.f.Close()
}

// withStoreLock runs f holding the store-wide lock that collection takes exclusively.
func (b *Builder) withStoreLock(how int, f func() error) error {
	lf, err := os.OpenFile(filepath.Join(b.root, "leases", ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
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

// leased returns the ids used by running builds (of any process), removing the files
// of builds that are gone.
func (b *Builder) leased() map[string]bool {
	out := map[string]bool{}
	dir := filepath.Join(b.root, "leases")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.Remove(p) // its build is gone
			f.Close()
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			out[strings.TrimSpace(sc.Text())] = true
		}
		f.Close()
	}
	return out
}
