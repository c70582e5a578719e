package ocamlci

import (
	"fmt"
	"path"
	"sort"

	"github.com/kiln-ci/kiln/builder/image"
)

// Platform is one entry of the build matrix: a distribution with an OCaml version on
// an architecture, built by a fleet pool from a base image.
type Platform struct {
	// Name identifies the platform in variant names and .kiln.yml, e.g. "debian-12-4.13_arm64".
	Name   string `json:"name"`
	Distro string `json:"distro"` // e.g. "debian-12"
	OCaml  string `json:"ocaml"`  // major.minor of the compiler in the image
	Arch   string `json:"arch"`   // Debian architecture name: amd64, arm64, …
	// Pool is the fleet pool that builds it, e.g. "linux-x86_64".
	Pool string `json:"pool"`
	// Image is the base image, as the builder's (from …) takes it.
	Image string `json:"image"`
	// Debian, when set, says how to make Image from the Debian mirror when it is missing.
	Debian *image.DebianOptions `json:"-"`
	// Vars are the opam variables of the image (what `opam var` prints in it), used to
	// solve and to evaluate filters.
	Vars map[string]string `json:"-"`
	// System lists the opam packages the image provides outside opam (the system
	// compiler, dune from the distribution), as "name.version"; solves keep them at
	// these versions.
	System []string `json:"system,omitempty"`
	// Optional platforms are built only for repositories that add them.
	Optional bool `json:"optional,omitempty"`
	// Experimental platforms are built but their failures do not fail the commit.
	Experimental bool `json:"experimental,omitempty"`
}

// opamArch maps Debian architecture names to opam's arch variable.
var opamArch = map[string]string{"amd64": "x86_64", "arm64": "arm64", "ppc64el": "ppc64", "s390x": "s390x", "riscv64": "riscv64"}

// poolArch maps Debian architecture names to the fleet's pool suffix.
var poolArch = map[string]string{"amd64": "x86_64", "arm64": "arm64", "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

// DebianPackages are the Debian packages of the default images: the compiler, opam,
// dune and odoc (for the documentation lint).
var DebianPackages = []string{"ocaml-nox", "opam", "ocaml-dune", "ocaml-odoc", "git", "ca-certificates", "make", "gcc", "libc6-dev"}

// DebianPlatform returns the platform of Debian 12 (bookworm) with its own OCaml
// (4.13.1), opam and dune (2.9.3) on arch, whose image the builder makes offline
// from the Debian mirror.
func DebianPlatform(arch string) Platform {
	opts := image.DebianOptions{Suite: "bookworm", Arch: arch, Packages: DebianPackages}
	name, err := opts.LocalName()
	if err != nil {
		panic(err) // the options are constant and valid
	}
	return Platform{
		Name:   "debian-12-4.13_" + arch,
		Distro: "debian-12",
		OCaml:  "4.13",
		Arch:   arch,
		Pool:   "linux-" + poolArch[arch],
		Image:  name,
		Debian: &opts,
		Vars: map[string]string{
			"os": "linux", "os-family": "debian", "os-distribution": "debian", "os-version": "12",
			"arch": opamArch[arch], "opam-version": "2.1.2",
			"ocaml:version": "4.13.1", "ocaml:native": "true", "sys-ocaml-version": "4.13.1",
		},
		System: []string{"ocaml.4.13.1", "ocaml-system.4.13.1", "ocaml-config.2", "dune.2.9.3", "base-unix.base", "base-threads.base", "base-bigarray.base"},
	}
}

// DefaultPlatforms is the matrix that works on a single Debian machine: Debian 12 on
// amd64, and on arm64 under emulation.
func DefaultPlatforms() []Platform {
	arm := DebianPlatform("arm64")
	return []Platform{DebianPlatform("amd64"), arm}
}

// Select applies a repository's platform selection to the server's matrix: the
// default platforms and the added optional ones, less the skipped. A name or pattern
// that matches no platform is an error listing the known names.
func Select(matrix []Platform, sel PlatformSelection) ([]Platform, error) {
	names := make([]string, len(matrix))
	for i, p := range matrix {
		names[i] = p.Name
	}
	sort.Strings(names)
	matches := func(pat string) ([]bool, error) {
		hit := make([]bool, len(matrix))
		any := false
		for i, p := range matrix {
			if ok, _ := path.Match(pat, p.Name); ok {
				hit[i], any = true, true
			}
		}
		if !any {
			return nil, &ConfigError{Msg: fmt.Sprintf("platforms: %q matches no platform (known: %v)", pat, names)}
		}
		return hit, nil
	}
	want := make([]bool, len(matrix))
	for i, p := range matrix {
		want[i] = !p.Optional
	}
	for _, pat := range sel.Add {
		hit, err := matches(pat)
		if err != nil {
			return nil, err
		}
		for i := range hit {
			want[i] = want[i] || hit[i]
		}
	}
	for _, pat := range sel.Skip {
		hit, err := matches(pat)
		if err != nil {
			return nil, err
		}
		for i := range hit {
			want[i] = want[i] && !hit[i]
		}
	}
	var out []Platform
	for i, p := range matrix {
		if want[i] {
			out = append(out, p)
		}
	}
	return out, nil
}
