//go:build ignore

// Command baseimages makes the Debian base images that kiln's tests use, in the tests'
// image store (the folder "images" of the test cache, see testenv.CacheRoot), so that
// .ci/run can make them in the background while unrelated tests run. Each image is
// keyed by its recipe; the store locks a recipe while it is made, so a test that needs
// an image this command is making waits for it, and one already made is used as it is.
//
//	go run .ci/baseimages.go
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// ocamlPackages mirrors matrix.DebianPackages (services/internal/matrix, which this
// command may not import): the packages of the services' default Debian platforms.
// Should the two drift apart, nothing breaks: the tests make the image they need
// themselves, only later.
var ocamlPackages = []string{"ocaml-nox", "opam", "rsync", "ocaml-dune", "ocaml-odoc", "git", "ca-certificates", "make", "gcc", "libc6-dev"}

// opamPackages mirrors baseimages.OpamPackages (services/baseimages): the root
// filesystems of the base-images service's opam images, Debian 12 and 13.
var opamPackages = []string{"opam", "rsync", "git", "ca-certificates", "curl", "make", "m4", "gcc", "libc6-dev",
	"patch", "unzip", "bzip2", "xz-utils", "sudo", "passwd"}

func main() {
	// The recipes of imagetest.Debian (the plain base), of the tests that build for
	// arm64, and of the services' default platforms (Debian 12 with OCaml on amd64 and
	// arm64); the host's architecture first, since more tests need it and emulated
	// ones take longest.
	recipes := []image.DebianOptions{
		{Suite: "bookworm"},
		{Suite: "bookworm", Arch: "amd64", Packages: ocamlPackages},
		{Suite: "bookworm", Arch: "arm64"},
		{Suite: "bookworm", Arch: "arm64", Packages: ocamlPackages},
		{Suite: "bookworm", Arch: "amd64", Packages: opamPackages},
		{Suite: "trixie", Arch: "amd64", Packages: opamPackages},
		{Suite: "bookworm", Arch: "arm64", Packages: opamPackages},
		{Suite: "trixie", Arch: "arm64", Packages: opamPackages},
	}

	st, err := image.Open(filepath.Join(testenv.CacheRoot(), "images"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseimages:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	failed := false
	for _, o := range recipes {
		name, err := o.LocalName()
		if err != nil {
			fmt.Fprintln(os.Stderr, "baseimages:", err)
			failed = true
			continue
		}
		start := time.Now()
		b, err := st.EnsureDebian(ctx, o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "baseimages: %s: %v\n", name, err)
			failed = true
			continue
		}
		fmt.Printf("%s\t%s\t%s\n", name, b.ID, time.Since(start).Round(time.Second))
	}
	if failed {
		os.Exit(1)
	}
}
