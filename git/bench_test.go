package git_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/git/gittest"
)

func benchRepo(b *testing.B) (*gittest.Repo, string, []string) {
	r := gittest.NewRepo(b)
	files := map[string]string{}
	var paths []string
	for i := range 50 {
		p := fmt.Sprintf("pkg%d/pkg%d.opam", i, i)
		files[p] = fmt.Sprintf("opam-version: \"2.0\"\nname: \"pkg%d\"\ndepends: [\"dune\" {>= \"3.0\"}]\n", i)
		paths = append(paths, p)
	}
	for i := range 200 {
		files[fmt.Sprintf("src/m%d.ml", i)] = fmt.Sprintf("let v = %d\n", i)
	}
	return r, r.Commit("bench", files), paths
}

// BenchmarkFetchUpToDate: a poll of a mirror that has nothing new (over HTTP).
func BenchmarkFetchUpToDate(b *testing.B) {
	srv := gittest.NewServer(b)
	up, _, _ := benchRepo(b)
	url := srv.Publish(b, up, "bench.git")
	m := git.NewMirrors(b.TempDir(), git.MirrorsOptions{})
	ctx := context.Background()
	if _, err := m.Fetch(ctx, url); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.Fetch(ctx, url); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadFiles50: reading 50 opam files at a commit with one git process.
func BenchmarkReadFiles50(b *testing.B) {
	up, c, paths := benchRepo(b)
	r, err := git.Open(context.Background(), up.Dir)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		files, err := r.ReadFiles(context.Background(), c, paths)
		if err != nil || len(files) != len(paths) {
			b.Fatal(len(files), err)
		}
	}
}

// BenchmarkCheckout250Files: writing a commit's tree (250 files) into a fresh directory.
func BenchmarkCheckout250Files(b *testing.B) {
	up, c, _ := benchRepo(b)
	r, err := git.Open(context.Background(), up.Dir)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	i := 0
	for b.Loop() {
		i++
		if err := r.Checkout(context.Background(), c, filepath.Join(dir, fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}
