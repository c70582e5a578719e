package logarchive

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildLog is a plausible opam build log of about size bytes, different for each i.
func buildLog(i, size int) string {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	var b strings.Builder
	fmt.Fprintf(&b, "Processing  1/3: [pkg%d.1.%d: extract]\n-> retrieved pkg%d.1.%d  (cached)\n", i, i%7, i, i%7)
	for b.Len() < size {
		switch r.IntN(6) {
		case 0:
			fmt.Fprintf(&b, "- (cd _build/default/src && /home/opam/.opam/4.14/bin/ocamlopt.opt -w @1..3@5..28@30..39@43@46..47@49..57@61..62@67@69@40-41-42-44-45-48-58-59-60-66 -g -I src/.pkg%d.objs/byte -o src/m%d.cmx -c -impl src/m%d.ml)\n", i, r.IntN(100), r.IntN(100))
		case 1:
			fmt.Fprintf(&b, "File \"src/m%d.ml\", line %d, characters %d-%d:\nWarning %d: unused variable x%d.\n", r.IntN(100), r.IntN(900), r.IntN(40), r.IntN(80), 26+r.IntN(10), r.IntN(50))
		case 2:
			fmt.Fprintf(&b, "-> installed dep%d.%d.%d\n", r.IntN(4000), r.IntN(5), r.IntN(9))
		default:
			fmt.Fprintf(&b, "[pkg%d: dune build] Done: %d/%d (jobs: 2)\n", i, r.IntN(300), 300)
		}
	}
	if i%97 == 0 {
		b.WriteString("File \"src/lib.ml\", line 12, characters 2-12:\nError: Unbound module Stdlib.In_channel\n")
	}
	return b.String()
}

// BenchmarkSearch13000 searches a run of 13,000 logs (4,350 packages × 3 switches, about
// 16 KB each) for an error that 135 of them hold: first for the whole run, then for one
// switch.
func BenchmarkSearch13000(b *testing.B) {
	a, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	switches := []string{"4.14", "5.3", "5.4"}
	var raw int64
	for i := range 13000 {
		l := buildLog(i, 16<<10)
		raw += int64(len(l))
		if err := a.Put(context.Background(), "run", fmt.Sprintf("%s/pkg%d.1.%d", switches[i%3], i, i%7), strings.NewReader(l)); err != nil {
			b.Fatal(err)
		}
	}
	var stored int64
	filepath.WalkDir(a.Dir(), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if st, err := e.Info(); err == nil {
				stored += st.Size()
			}
		}
		return nil
	})
	b.Logf("13,000 logs: %d MB, %d MB stored", raw>>20, stored>>20)
	re := regexp.MustCompile(`Unbound module Stdlib\.\w+`)
	for _, tc := range []struct {
		name, prefix string
		want, share  int
	}{
		{"run", "", 135, 1},
		{"switch", "5.3/", 45, 3},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(raw / int64(tc.share))
			for b.Loop() {
				res, err := a.Search(context.Background(), "run", tc.prefix, re)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Matches) != tc.want {
					b.Fatalf("%d matches, want %d", len(res.Matches), tc.want)
				}
			}
		})
	}
}

// BenchmarkPut stores 16 KB build logs.
func BenchmarkPut(b *testing.B) {
	a, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	l := buildLog(1, 16<<10)
	b.SetBytes(int64(len(l)))
	i := 0
	for b.Loop() {
		i++
		if err := a.Put(context.Background(), "run", fmt.Sprintf("s/p%d", i), strings.NewReader(l)); err != nil {
			b.Fatal(err)
		}
	}
}
