package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Snapshots made from volatile overlays are not synced when they are committed: after
// an unclean shutdown (power loss, kernel crash) their files may be incomplete. Each
// snapshot records the boot it was made in (Meta.Boot); Sync syncs the store's file
// system and records the time it did so in synced.json. When a store is opened in a
// later boot, snapshots of an earlier boot made after that boot's last sync are
// dropped, with those built on them: their steps run again. A clean shutdown syncs the
// disk too, but the store cannot tell one from the other.

// syncPoint is the content of synced.json: everything committed in Boot up to Time is
// on disk.
type syncPoint struct {
	Boot string    `json:"boot"`
	Time time.Time `json:"time"`
}

// bootID names the current boot of the machine.
func bootID() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// Sync writes every snapshot committed so far to disk, and records it.
func (s *Store) Sync() error {
	start := time.Now().UTC()
	f, err := os.Open(s.root)
	if err != nil {
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	err = unix.Syncfs(int(f.Fd()))
	f.Close()
	if err != nil {
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	data, _ := json.Marshal(syncPoint{Boot: bootID(), Time: start})
	tmp := filepath.Join(s.root, "tmp", fmt.Sprintf("synced-%d.json", os.Getpid()))
	if err := writeFile(tmp, data); err != nil {
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.root, "synced.json")); err != nil {
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	return nil
}

// dropUnsynced removes the snapshots a crash may have cut short (see Sync). It reads
// every snapshot's metadata only on the first opening of a boot.
func (s *Store) dropUnsynced() {
	boot := bootID()
	last := filepath.Join(s.root, "boot")
	if prev, err := os.ReadFile(last); boot == "" || err == nil && string(prev) == boot {
		return
	}
	var sp syncPoint
	if data, err := os.ReadFile(filepath.Join(s.root, "synced.json")); err == nil {
		json.Unmarshal(data, &sp)
	}
	metas, err := s.List()
	if err != nil {
		return
	}
	dropped := map[string]bool{}
	for _, m := range metas {
		if m.Boot != "" && m.Boot != boot && !(m.Boot == sp.Boot && !m.Created.After(sp.Time)) {
			dropped[m.ID] = true
		}
	}
	// Then what was built on them (children come after their parents).
	for changed := true; changed; {
		changed = false
		for _, m := range metas {
			if !dropped[m.ID] && dropped[m.Parent] {
				dropped[m.ID], changed = true, true
			}
		}
	}
	for id := range dropped {
		if err := s.Remove(id); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("snapshot store: remove unsynced snapshot", "id", id, "err", err)
		}
	}
	if len(dropped) > 0 {
		slog.Warn("snapshot store: dropped snapshots made before an unclean shutdown and not synced", "root", s.root, "count", len(dropped), "synced_until", sp.Time)
	}
	writeFile(last, []byte(boot))
}
