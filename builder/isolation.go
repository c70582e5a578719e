package builder

import (
	"log/slog"
	"os"

	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/snapshot"
)

// setupSandbox connects the sandbox to the stores (disk budgets, shifted views) and
// puts steps in a user namespace where the machine allows it.
func (b *Builder) setupSandbox() {
	sb := b.sandbox
	sb.NewPrivileges = b.opts.NewPrivileges
	sb.DiskUsage = func(dir string) (int64, bool) {
		if n, ok := b.store.Usage(dir); ok {
			return n, ok
		}
		return b.cacheStore.Usage(dir)
	}
	ids, err := b.userNSRange()
	if err == nil {
		err = sb.EnableUserNS(ids, func(dir, target string) (func() error, error) {
			return b.shift(dir, target, sb.UserNS(), ids)
		})
	}
	for _, st := range []*snapshot.Store{b.store, b.cacheStore} {
		if err == nil {
			err = st.ProbeShift(sb.UserNS(), ids.UID, ids.GID)
		}
	}
	if err != nil {
		sb.DisableUserNS()
		slog.Warn("builder: steps run without a user namespace, as the host's root", "root", b.root, "reason", err)
		return
	}
	slog.Info("builder: steps run in a user namespace", "root", b.root, "uid", ids.UID, "gid", ids.GID, "ids", ids.Size)
}

// userNSRange is Options.IDs, or the subordinate ids of the user kiln (claimed if it
// has none).
func (b *Builder) userNSRange() (sandbox.IDRange, error) {
	if b.opts.IDs.Size > 0 {
		return b.opts.IDs, nil
	}
	return sandbox.ClaimSubIDs("kiln")
}

// shift gives the sandbox the view of dir shifted into its user namespace: of a step's
// work or a cache's, or of a plain directory.
func (b *Builder) shift(dir, target string, userns *os.File, ids sandbox.IDRange) (func() error, error) {
	for _, st := range []*snapshot.Store{b.store, b.cacheStore} {
		if release, ok, err := st.Shift(dir, target, userns, ids.UID, ids.GID); ok {
			return release, err
		}
	}
	return snapshot.ShiftDir(dir, target, userns)
}
