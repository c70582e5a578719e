package builder

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	"github.com/kiln-ci/kiln/builder/snapshot"

	"golang.org/x/sys/unix"
)

// GCOptions say how much to collect.
type GCOptions struct {
	// Budget is the largest total size (bytes) of the snapshots to keep; 0 is no budget.
	Budget int64
	// MinFree is the free space (bytes) to reach on the store's file system; 0 uses the
	// builder's MinFree.
	MinFree int64
	// DryRun lists what would go without removing it.
	DryRun bool
}

// GCReport is what a collection removed.
type GCReport struct {
	Removed []string
	Freed   int64
	// Kept is the total size of the snapshots left.
	Kept int64
}

// GC removes snapshots, least recently used first and only those no other snapshot
// builds on, until the store fits opts.Budget and the disk has opts.MinFree free. It
// never removes a snapshot a running build (of any process sharing the root) uses.
// Then it syncs the stores: the snapshots kept survive a power loss from then on.
func (b *Builder) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	if opts.MinFree == 0 {
		opts.MinFree = b.opts.MinFree
	}
	var rep GCReport
	err := b.withStoreLock(unix.LOCK_EX, func() error {
		metas, err := b.store.List()
		if err != nil {
			return err
		}
		leased := b.leased()
		children := map[string]int{}
		var total int64
		for _, m := range metas {
			if m.Parent != "" {
				children[m.Parent]++
			}
			total += m.Size
		}
		free := freeBytes(b.store.Root())
		need := func() bool {
			return (opts.Budget > 0 && total > opts.Budget) || free < opts.MinFree
		}
		removed := map[string]bool{}
		for need() {
			if err := ctx.Err(); err != nil {
				return err
			}
			// The least recently used leaf that no build holds.
			var cands []int
			for i, m := range metas {
				if !removed[m.ID] && children[m.ID] == 0 && !leased[m.ID] {
					cands = append(cands, i)
				}
			}
			if len(cands) == 0 {
				break
			}
			sort.Slice(cands, func(a, c int) bool {
				return metas[cands[a]].LastUsed.Before(metas[cands[c]].LastUsed)
			})
			m := metas[cands[0]]
			if !opts.DryRun {
				if err := b.store.Remove(m.ID); err != nil {
					return err
				}
				free = freeBytes(b.store.Root())
			} else {
				free += m.Size
			}
			removed[m.ID] = true
			rep.Removed = append(rep.Removed, m.ID)
			rep.Freed += m.Size
			total -= m.Size
			if m.Parent != "" {
				children[m.Parent]--
			}
			slog.Debug("builder gc: removed", "id", m.ID, "size", m.Size, "last_used", m.LastUsed)
		}
		rep.Kept = total
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("builder gc: %w", err)
	}
	if !opts.DryRun {
		// A collection pass is also when the snapshots made since the last one reach the
		// disk for sure (see snapshot.Store.Sync).
		for _, st := range []*snapshot.Store{b.store, b.cacheStore} {
			if err := st.Sync(); err != nil {
				return rep, fmt.Errorf("builder gc: %w", err)
			}
		}
	}
	return rep, nil
}

func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 1 << 62
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
