// Package matrix is the build matrix services share: platforms (a distribution with an
// OCaml version on an architecture), the fleet pool that builds each and the base image
// it starts from, with the opam variables and system packages of that image.
package matrix

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

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
	// Compiler lists what an opam switch on the image's compiler is made of
	// (`opam switch create NAME ocaml-system.V`), as "name.version", the switch's
	// compiler package first. Solves against an opam repository hold these and leave
	// everything else, dune included, to opam.
	Compiler []string `json:"compiler,omitempty"`
	// Optional platforms are built only for repositories that add them.
	Optional bool `json:"optional,omitempty"`
	// Experimental platforms are built but their failures do not fail the commit.
	Experimental bool `json:"experimental,omitempty"`
}

// opamArch maps Debian architecture names to opam's arch variable.
var opamArch = map[string]string{"amd64": "x86_64", "arm64": "arm64", "ppc64el": "ppc64", "s390x": "s390x", "riscv64": "riscv64"}

// poolArch maps Debian architecture names to the fleet's pool suffix.
var poolArch = map[string]string{"amd64": "x86_64", "arm64": "arm64", "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

// DebianPackages are the Debian packages of the default images: the compiler, opam
// (with rsync, which opam needs for local repositories and pins of local folders),
// dune and odoc (for the documentation lint).
var DebianPackages = []string{"ocaml-nox", "opam", "rsync", "ocaml-dune", "ocaml-odoc", "git", "ca-certificates", "make", "gcc", "libc6-dev"}

// Debian returns the platform of Debian 12 (bookworm) with its own OCaml
// (4.13.1), opam and dune (2.9.3) on arch, whose image the builder makes offline
// from the Debian mirror.
func Debian(arch string) Platform {
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
		System:   []string{"ocaml.4.13.1", "ocaml-system.4.13.1", "ocaml-config.2", "dune.2.9.3", "base-unix.base", "base-threads.base", "base-bigarray.base"},
		Compiler: []string{"ocaml-system.4.13.1", "ocaml.4.13.1"},
	}
}

// Default is the matrix that works on a single Debian machine: Debian 12 on
// amd64, and on arm64 under emulation.
func Default() []Platform {
	return []Platform{Debian("amd64"), Debian("arm64")}
}

// WithImage is p built from the base image ref, a registry reference such as a tag
// the base-images service publishes (REGISTRY/ocaml/opam:debian-12-ocaml-4.13),
// instead of a Debian root filesystem made locally. The builder pulls the host's
// architecture of a multi-architecture tag: an emulated platform names its own
// architecture's image (its per-architecture tag or digest).
func (p Platform) WithImage(ref string) Platform {
	p.Image, p.Debian = ref, nil
	return p
}

// WithImages gives the platforms named in images (platform name → image reference)
// those base images (see WithImage); a name that is not a platform of ps is an error.
func WithImages(ps []Platform, images map[string]string) ([]Platform, error) {
	out := make([]Platform, len(ps))
	used := map[string]bool{}
	for i, p := range ps {
		out[i] = p
		if ref, ok := images[p.Name]; ok {
			if ref == "" {
				return nil, fmt.Errorf("platform %s: empty image reference", p.Name)
			}
			out[i], used[p.Name] = p.WithImage(ref), true
		}
	}
	for name := range images {
		if !used[name] {
			names := make([]string, len(ps))
			for i, p := range ps {
				names[i] = p.Name
			}
			return nil, fmt.Errorf("image for platform %q: no such platform (platforms: %s)", name, strings.Join(names, ", "))
		}
	}
	return out, nil
}

// Pools are the fleet pools of the platforms, each once, in order.
func Pools(ps []Platform) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		if !seen[p.Pool] {
			seen[p.Pool] = true
			out = append(out, p.Pool)
		}
	}
	return out
}

// Digest identifies a matrix: a change of any platform's name, image, pool, system
// or compiler packages changes it.
func Digest(ps []Platform) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s %s %s %v %v;", p.Name, p.Image, p.Pool, p.System, p.Compiler)
	}
	h := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(h[:8])
}
