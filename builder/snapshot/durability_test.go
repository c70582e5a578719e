package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
	"golang.org/x/sys/unix"
)

// mountOptions returns the options of the mount at dir, from /proc/self/mountinfo.
func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && unescapeMount(f[4]) == dir {
			return line
		}
	}
	t.Fatalf("%s is not a mount point", dir)
	return ""
}

func TestStepOverlaysAreVolatile(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := Open(t.TempDir(), Overlay)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("base"), 0o644)
	if err := s.Import(context.Background(), "base", src, Meta{}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Prepare(context.Background(), "base")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Discard()
	if opts := mountOptions(t, w.Rootfs()); !strings.Contains(opts, "volatile") {
		t.Errorf("the step's overlay is not volatile: %s", opts)
	}
	if err := w.Commit("step", Meta{}, nil); err != nil {
		t.Fatal(err)
	}
	m, _, _ := s.Get("step")
	if m.Boot != bootID() || m.Boot == "" {
		t.Errorf("the snapshot's boot is %q, want %q", m.Boot, bootID())
	}
}

// TestUnsyncedSnapshotsDroppedAfterReboot opens a store whose snapshots were made in
// an earlier boot, before or after that boot's last sync.
func TestUnsyncedSnapshotsDroppedAfterReboot(t *testing.T) {
	testenv.RequireRoot(t)
	synced := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	type snap struct {
		id, parent, boot string
		created          time.Time
	}
	tests := []struct {
		name     string
		snaps    []snap
		lastBoot string // the boot of the store's last opening
		want     []string
	}{
		{name: "made after the last sync of an earlier boot: dropped, with its children",
			lastBoot: "old",
			snaps: []snap{{"a", "", "old", synced.Add(-time.Hour)}, {"b", "a", "old", synced.Add(time.Minute)},
				{"c", "b", "old", synced.Add(2 * time.Minute)}},
			want: []string{"a"}},
		{name: "made before the last sync: kept",
			lastBoot: "old",
			snaps:    []snap{{"a", "", "old", synced.Add(-time.Hour)}, {"b", "a", "old", synced}},
			want:     []string{"a", "b"}},
		{name: "of a boot that never synced: dropped",
			lastBoot: "older",
			snaps:    []snap{{"a", "", "older", synced.Add(-time.Hour)}},
			want:     nil},
		{name: "in this boot: kept without looking",
			lastBoot: bootID(),
			snaps:    []snap{{"a", "", bootID(), synced.Add(time.Hour)}},
			want:     []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			s, err := Open(root, Copy)
			if err != nil {
				t.Fatal(err)
			}
			for _, sn := range tt.snaps {
				dir := filepath.Join(root, "snapshots", sn.id)
				os.MkdirAll(filepath.Join(dir, "fs"), 0o755)
				data, _ := json.Marshal(Meta{ID: sn.id, Parent: sn.parent, Full: sn.parent == "", Boot: sn.boot, Created: sn.created})
				os.WriteFile(filepath.Join(dir, "meta.json"), data, 0o600)
			}
			data, _ := json.Marshal(syncPoint{Boot: "old", Time: synced})
			os.WriteFile(filepath.Join(root, "synced.json"), data, 0o600)
			os.WriteFile(filepath.Join(root, "boot"), []byte(tt.lastBoot), 0o600)
			if s, err = Open(root, Copy); err != nil {
				t.Fatal(err)
			}
			metas, _ := s.List()
			var got []string
			for _, m := range metas {
				got = append(got, m.ID)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("snapshots left = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSyncRecordsThePoint(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := Open(t.TempDir(), Copy)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	var sp syncPoint
	data, err := os.ReadFile(filepath.Join(s.Root(), "synced.json"))
	if err == nil {
		err = json.Unmarshal(data, &sp)
	}
	if err != nil || sp.Boot != bootID() || sp.Time.Before(before.Add(-time.Second)) {
		t.Errorf("synced.json = %+v (%v), want this boot at %s", sp, err, before)
	}
}

func TestImportSharesTheBase(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "base")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "os-release"), []byte("ID=test\n"), 0o644)
	os.Symlink("etc/os-release", filepath.Join(src, "link"))
	s, err := Open(filepath.Join(dir, "store"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(context.Background(), "base", src, Meta{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(src, "etc", "os-release"))
	b, err := os.Stat(filepath.Join(s.FS("base"), "etc", "os-release"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(a, b) {
		t.Error("the base's files were copied, not shared")
	}
	if l, err := os.Readlink(filepath.Join(s.FS("base"), "link")); err != nil || l != "etc/os-release" {
		t.Errorf("link = %q, %v", l, err)
	}
}

func TestOpenOnFullDiskNamesTheDisk(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("no tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	root := filepath.Join(dir, "store")
	if _, err := Open(root, Copy); err != nil { // its folders, while there is room
		t.Fatal(err)
	}
	f, _ := os.Create(filepath.Join(dir, "fill"))
	f.Write(make([]byte, 2<<20))
	f.Close()
	_, err := Open(root, "")
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "tmpfs mounted on "+dir) {
		t.Errorf("Open on a full disk: %v, want %v naming tmpfs mounted on %s", err, ErrNoSpace, dir)
	}
}
