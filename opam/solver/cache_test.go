package solver_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

// TestCacheGivesTheSameAnswers writes the universe of the snapshot, reads it back,
// and asks both the same questions.
func TestCacheGivesTheSameAnswers(t *testing.T) {
	u := universe(t)
	var buf bytes.Buffer
	if err := u.WriteCache(&buf); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	c, err := solver.ReadCache(data, repotest.Master, solver.DebianAMD64(), solver.Flags{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cache: %d bytes", len(data))
	stale := []struct {
		name   string
		commit string
		plat   solver.Platform
		flags  solver.Flags
	}{
		{"other commit", "0000000000000000000000000000000000000000", solver.DebianAMD64(), solver.Flags{}},
		{"other platform", repotest.Master, platform("2.2.0"), solver.Flags{}},
		{"other flags", repotest.Master, solver.DebianAMD64(), solver.Flags{WithTest: true}},
	}
	for _, s := range stale {
		t.Run(s.name, func(t *testing.T) {
			if _, err := solver.ReadCache(data, s.commit, s.plat, s.flags); !errors.Is(err, solver.ErrStaleCache) {
				t.Errorf("got %v, want ErrStaleCache", err)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		if _, err := solver.ReadCache(data[:len(data)/2], repotest.Master, solver.DebianAMD64(), solver.Flags{}); err == nil || errors.Is(err, solver.ErrStaleCache) {
			t.Errorf("got %v, want a decoding error", err)
		}
	})
	ctx := context.Background()
	answer := func(u *solver.Universe, q string) string {
		switch q[0] {
		case 's':
			atoms, err := solver.ParseRequest([]string{q[1:]})
			if err != nil {
				t.Fatal(err)
			}
			sel, err := u.Solve(ctx, solver.Request{Install: atoms})
			if err != nil {
				return err.Error()
			}
			return fmt.Sprint(sel.Packages)
		case 'r':
			p, _ := opam.ParsePackage(q[1:])
			list, err := revdeps.Of(ctx, u, p, revdeps.Options{Recursive: true, AnyInstallable: true})
			if err != nil {
				return err.Error()
			}
			return fmt.Sprint(len(list), list[:min(len(list), 20)])
		}
		cand := u.Cand(opam.Package{Name: opam.PackageName(q[1:]), Version: u.Repo.Latest(opam.PackageName(q[1:])).Version})
		return fmt.Sprint(cand.Unavailable, cand.Deps, cand.Conflicts, cand.Depopts, cand.Avoid)
	}
	dune := "dune." + string(u.Repo.Latest("dune").Version)
	for _, q := range []string{"sdune", "socamlfind", "sdune<3.0", "socaml>=5.0", "ssdl2", "r" + dune, "rocplib-endian.1.2", "cdune", "chol_light", "cocaml-variants"} {
		t.Run(q, func(t *testing.T) {
			if a, b := answer(u, q), answer(c, q); a != b {
				t.Errorf("fresh universe: %s\nfrom the cache: %s", a, b)
			}
		})
	}
	t.Run("files filled", func(t *testing.T) {
		p := c.Repo.Latest("dune")
		if p.File != nil {
			t.Fatal("the cache holds parsed files")
		}
		if err := repository.Fill(ctx, repotest.GitDir(t), []*repository.Package{p}); err != nil {
			t.Fatal(err)
		}
		if p.File == nil || p.File.Synopsis() != u.Repo.Latest("dune").File.Synopsis() {
			t.Errorf("filled file %v", p.File)
		}
	})
}

func BenchmarkReadCache(b *testing.B) {
	u := universe(b)
	var buf bytes.Buffer
	if err := u.WriteCache(&buf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := solver.ReadCache(buf.Bytes(), repotest.Master, solver.DebianAMD64(), solver.Flags{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCachedUniverseConcurrentSolves solves in parallel on a universe read from a
// cache, whose versions are decoded as the solves first need them.
func TestCachedUniverseConcurrentSolves(t *testing.T) {
	r := smallRepo(t, map[string]string{
		"a.1": `depends: ["b" "c"]`, "b.1": `depends: ["c" {>= "2"}]`, "c.1": ``, "c.2": ``, "d.1": `depends: ["a" | "c"]`,
	})
	// A cache needs a commit; the index of a checkout stands for one here.
	r = repository.New("0123456789012345678901234567890123456789", r.Packages(), nil)
	var buf bytes.Buffer
	if err := solver.NewUniverse(r, solver.DebianAMD64()).WriteCache(&buf); err != nil {
		t.Fatal(err)
	}
	u, err := solver.ReadCache(buf.Bytes(), r.Commit, solver.DebianAMD64(), solver.Flags{})
	if err != nil {
		t.Fatal(err)
	}
	// d takes c, the alternative that needs fewer packages, as opam's criteria do.
	want := map[string]string{"a": "[a.1 b.1 c.2]", "d": "[c.2 d.1]", "b": "[b.1 c.2]", "c": "[c.2]"}
	errs := make(chan error, 4*len(want))
	for range 4 {
		for name, w := range want {
			go func() {
				sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: opam.PackageName(name)}}})
				switch {
				case err != nil:
					errs <- err
				case fmt.Sprint(sel.Packages) != w:
					errs <- fmt.Errorf("%s: %v, want %s", name, sel.Packages, w)
				default:
					errs <- nil
				}
			}()
		}
	}
	for range 4 * len(want) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// FuzzReadCache damages a cache (keeping its checksum right, so that the decoding
// runs) and reads it: an error is fine, a panic is not.
func FuzzReadCache(f *testing.F) {
	files := map[string]string{
		"a.1": `depends: ["b" {>= "1" & < "2"} "c"] conflicts: ["d"] depopts: ["e"] flags: avoid-version conflict-class: "k"`,
		"b.1": ``, "c.1": `available: false`, "d.1": `depends: [` + strings.Repeat(`("a" & "b") | `, 8) + `"c"]`,
	}
	const commit = "0123456789012345678901234567890123456789"
	dir := repotest.Files(f, files)
	r, err := repository.LoadDir(context.Background(), dir)
	if err != nil {
		f.Fatal(err)
	}
	r = repository.New(commit, r.Packages(), nil)
	var buf bytes.Buffer
	if err := solver.NewUniverse(r, solver.DebianAMD64()).WriteCache(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes(), 0, byte(0))
	f.Add(buf.Bytes(), len(buf.Bytes())/2, byte(0xff))
	f.Fuzz(func(t *testing.T, data []byte, at int, b byte) {
		if len(data) < 4 {
			return
		}
		data = bytes.Clone(data)
		body := data[:len(data)-4]
		if at >= 0 && at < len(body) {
			body[at] = b
		}
		binary.BigEndian.PutUint32(data[len(data)-4:], crc32.ChecksumIEEE(body))
		u, err := solver.ReadCache(data, commit, solver.DebianAMD64(), solver.Flags{})
		if err != nil {
			return
		}
		for _, n := range []opam.PackageName{"a", "b", "c", "d", "zz"} {
			u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: n}}})
			for _, c := range u.Versions(n) {
				u.DependsOn(c, true)
			}
		}
	})
}
