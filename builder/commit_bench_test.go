package builder_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"golang.org/x/sys/unix"
)

// dirtyElsewhere has another process write n MiB to a file beside the store, left
// unsynced (dirty in the page cache), and returns how to remove it.
func dirtyElsewhere(b *testing.B, dir string, mib int) func() {
	b.Helper()
	f := filepath.Join(dir, "dirty-elsewhere")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+f, "bs=1M", "count="+strconv.Itoa(mib)).CombinedOutput(); err != nil {
		b.Fatalf("dd: %v: %s", err, out)
	}
	return func() { os.Remove(f) }
}

// BenchmarkCommit measures committing a step (the unmount of its overlay and the
// rename into the store) after it wrote 0.2, 1 or 2 GB, with and without another
// process's 1 GB of unwritten data on the same disk. Each case writes its data once
// per iteration and removes it after; the disk is synced between iterations, outside
// the timings.
func BenchmarkCommit(outer *testing.B) {
	bl, _ := newBuilder(outer, builder.Options{Root: benchRoot(outer), Driver: snapshot.Overlay})
	base, _ := mustBuild(outer, bl, parse(outer, "((from "+imagetest.Debian(outer).Ref+"))"), builder.BuildContext{})
	st := bl.Store()
	for _, dirty := range []int{0, 1024} {
		for _, mb := range []int{200, 1000, 2000} {
			outer.Run(fmt.Sprintf("written=%dMB/dirty-elsewhere=%dMB", mb, dirty), func(b *testing.B) {
				b.StopTimer()
				for i := 0; i < b.N; i++ {
					w, err := st.Prepare(context.Background(), base)
					if err != nil {
						b.Fatal(err)
					}
					out := filepath.Join(w.Rootfs(), "written")
					if o, err := exec.Command("dd", "if=/dev/zero", "of="+out, "bs=1M", "count="+strconv.Itoa(mb)).CombinedOutput(); err != nil {
						b.Fatalf("dd: %v: %s", err, o)
					}
					cleanup := func() {}
					if dirty > 0 {
						cleanup = dirtyElsewhere(b, filepath.Dir(st.Root()), dirty)
					}
					id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
					b.StartTimer()
					err = w.Commit(id, snapshot.Meta{}, nil)
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					st.Remove(id)
					cleanup()
					unix.Sync()
				}
			})
		}
	}
}

// BenchmarkOpenWithDirtyElsewhere measures opening a builder (its start-up overlay
// probe included) while another process has 1 GB of unwritten data on the same disk.
func BenchmarkOpenWithDirtyElsewhere(b *testing.B) {
	root := benchRoot(b)
	newBuilder(b, builder.Options{Root: root})
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		cleanup := dirtyElsewhere(b, root, 1024)
		b.StartTimer()
		if _, err := builder.New(builder.Options{Root: root, Images: imagetest.Store(b)}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cleanup()
		unix.Sync()
	}
}

// BenchmarkImportBase measures making the first snapshot of a Debian base in a new
// builder root (its files shared with the image store, or copied).
func BenchmarkImportBase(b *testing.B) {
	ref := imagetest.Debian(b).Ref
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		bl, _ := newBuilder(b, builder.Options{Root: benchRoot(b)})
		s := parse(b, "((from "+ref+"))")
		b.StartTimer()
		mustBuild(b, bl, s, builder.BuildContext{})
		b.StopTimer()
	}
}

// BenchmarkUncachedSteps measures 20 small run steps that never hit the cache: the
// cost of a step's sandbox (namespaces, filter, shifted views) and commit.
func BenchmarkUncachedSteps(b *testing.B) {
	bl, base := newBuilder(b, builder.Options{Root: benchRoot(b)})
	mustBuild(b, bl, parse(b, "((from "+base+"))"), builder.BuildContext{})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nonce := strconv.FormatInt(time.Now().UnixNano(), 10)
		s := parse(b, strings.Replace(twentySteps(base), "(run", "(env NONCE "+nonce+") (run", 1))
		mustBuild(b, bl, s, builder.BuildContext{})
	}
}
