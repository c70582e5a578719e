package builder_test

import (
	"context"
	"fmt"
	"io"
	"os"
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

// twentySteps is a spec of 20 small run steps.
func twentySteps(base string) string {
	var ops strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&ops, " (run (shell \"echo step %d > /step-%d\"))\n", i, i)
	}
	return "((from " + base + ")\n" + ops.String() + ")"
}

// BenchmarkCached20Steps is a fully cached build of a 20-step spec.
func BenchmarkCached20Steps(b *testing.B) {
	bl, base := newBuilder(b, builder.Options{})
	s := parse(b, twentySteps(base))
	mustBuild(b, bl, s, builder.BuildContext{})
	before := bl.Stats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bl.Build(context.Background(), s, builder.BuildContext{}, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if bl.Stats().Run != before.Run {
		b.Fatal("cached builds ran steps")
	}
}

// BenchmarkSnapshotStep measures snapshotting one step (prepare a writable root on
// top of the parent, write a file, commit) as the root filesystem grows.
func BenchmarkSnapshotStep(outer *testing.B) {
	b := outer
	builders := map[snapshot.Driver]*builder.Builder{}
	parents := map[string]string{}
	for _, driver := range []snapshot.Driver{snapshot.Overlay, snapshot.Copy} {
		for _, mb := range []int{200, 1000, 2000} {
			if driver == snapshot.Copy && mb > 1000 {
				continue // linear in the size: 1 GB shows it
			}
			name := fmt.Sprintf("%s/rootfs=%dMB", driver, mb)
			b.Run(name, func(b *testing.B) {
				bl := builders[driver]
				if bl == nil {
					bl, _ = newBuilder(outer, builder.Options{Driver: driver, Root: benchRoot(outer)})
					builders[driver] = bl
				}
				parent, ok := parents[name]
				if !ok {
					// The base (~180 MB) plus generated files up to the size.
					grow := parse(b, fmt.Sprintf(`((from %s) (run (shell "mkdir /data && for i in $(seq %d); do head -c 1048576 /dev/urandom > /data/f$i; done")))`,
						imagetest.Debian(b).Ref, mb-180))
					parent, _ = mustBuild(b, bl, grow, builder.BuildContext{})
					parents[name] = parent
					unix.Sync() // so that no writeback of the generated data lands in the timings
					b.ResetTimer()
				}
				st := bl.Store()
				for i := 0; i < b.N; i++ {
					w, err := st.Prepare(context.Background(), parent)
					if err != nil {
						b.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(w.Rootfs(), "step-output"), []byte("x"), 0o644); err != nil {
						b.Fatal(err)
					}
					id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
					if err := w.Commit(id, snapshot.Meta{}, nil); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					st.Remove(id)
					b.StartTimer()
				}
			})
		}
	}
}

// benchRoot is the builder root of a benchmark: in $KILN_BENCH_DIR when set (to
// measure on a tmpfs, away from the noise of a shared disk), else a temporary folder.
func benchRoot(b *testing.B) string {
	if d := os.Getenv("KILN_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkStepOnGrownRootfs measures a whole uncached run step (sandbox included) on
// a 2 GB root filesystem with the overlay store.
func BenchmarkStepOnGrownRootfs(b *testing.B) {
	bl, base := newBuilder(b, builder.Options{Root: benchRoot(b)})
	grow := fmt.Sprintf(`((from %s) (run (shell "mkdir /data && for i in $(seq 1820); do head -c 1048576 /dev/urandom > /data/f$i; done")))`, base)
	mustBuild(b, bl, parse(b, grow), builder.BuildContext{})
	unix.Sync()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := parse(b, strings.TrimSuffix(grow, ")")+` (run (shell "echo `+strconv.FormatInt(time.Now().UnixNano(), 10)+` > /x")))`)
		if _, err := bl.Build(context.Background(), s, builder.BuildContext{}, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOCamlUncached is the first build of the OCaml spec in an empty store
// (base import, apt install of ocaml-nox from the mirror, compile, run).
func BenchmarkOCamlUncached(b *testing.B) {
	_, base := newBuilder(b, builder.Options{})
	ctx := ocamlContext(b)
	s := parse(b, ocamlSpec(base))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bl, _ := newBuilder(b, builder.Options{Root: b.TempDir()})
		b.StartTimer()
		if _, err := bl.Build(context.Background(), s, builder.BuildContext{Dir: ctx}, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
