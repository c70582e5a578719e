package baseimages

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/spec"
)

// OpamPackages are the Debian packages of the opam images' root filesystem: opam, the
// tools `opam init` checks for, and what building packages commonly needs.
var OpamPackages = []string{
	"opam", "rsync", "git", "ca-certificates", "curl", "make", "m4", "gcc", "libc6-dev",
	"patch", "unzip", "bzip2", "xz-utils", "sudo", "passwd",
}

// CompilerPackages are the Debian packages a compiler image adds for the
// distribution's own OCaml.
var CompilerPackages = []string{"ocaml-nox"}

// User is the images' user: opam, uid and gid 1000, in /home/opam.
const (
	UserName = "opam"
	UserID   = 1000
	Home     = "/home/opam"
)

// Rootfs is how the root filesystem of a build is made: Debian from the mirror (or
// the configured snapshot of it) with the opam images' packages. release, when
// set, is the date of the suite's Release file on the mirror, which names the
// root filesystem: a new Debian release makes a new one.
func (b Build) Rootfs(release string) image.DebianOptions {
	o := image.DebianOptions{Suite: b.Image.Distro.Suite, Arch: b.Arch.Name, Packages: OpamPackages, Mirror: b.Image.Config.mirror()}
	if release != "" {
		if name, err := o.LocalName(); err == nil {
			o.Name = name + "-" + release
		}
	}
	return o
}

// mirror is the Debian mirror of the distribution: the configured one, or the
// snapshot of the configured date, or "" for the default.
func (dc DistroConfig) mirror() string {
	if s := dc.Snapshot; s != "" && dc.Mirror == "" {
		return "http://snapshot.debian.org/archive/debian/" + strings.ReplaceAll(s, "-", "") + "T000000Z"
	}
	return dc.Mirror
}

// Specs are the builder specs of a build: the opam image's, and for a compiler image
// the same steps followed by the compiler's (so the builder reuses the opam image's
// steps). from is the root filesystem's local name. The Dockerfiles that reproduce
// each image are copied into it from the build context (see WriteContext).
func (b Build) Specs(from string) (opamSpec, full *spec.Spec) {
	opamSpec = &spec.Spec{From: from, Ops: append(opamOps(), copyDockerfile(b.opam()))}
	if b.Image.OCaml == "" {
		return opamSpec, opamSpec
	}
	full = &spec.Spec{From: from, Ops: append(append(opamSpec.Ops[:len(opamSpec.Ops):len(opamSpec.Ops)], compilerOps(b.Image)...), copyDockerfile(b))}
	return opamSpec, full
}

// opamOps make the opam user and initialise opam on the repository copy.
func opamOps() []spec.Op {
	root := spec.User{UID: 0, GID: 0}
	opam := spec.User{UID: UserID, GID: UserID}
	return []spec.Op{
		spec.Comment{Text: "opam image: user opam (1000), opam initialised on a copy of the opam repository"},
		root,
		// SOURCE_DATE_EPOCH=0: the password file's "last changed" day does not depend
		// on the day of the build.
		spec.Run{Shell: "SOURCE_DATE_EPOCH=0 groupadd -g 1000 opam && SOURCE_DATE_EPOCH=0 useradd -m -u 1000 -g 1000 -s /bin/bash opam" +
			" && echo 'opam ALL=(ALL:ALL) NOPASSWD:ALL' > /etc/sudoers.d/opam && chmod 440 /etc/sudoers.d/opam" +
			" && rm -f /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- /var/log/lastlog /var/log/faillog"},
		opam,
		spec.Env{Name: "HOME", Value: Home},
		spec.Workdir{Path: Home},
		spec.Copy{Src: []string{"opam-repository"}, Dst: Home + "/opam-repository"},
		spec.Run{Shell: "opam init -a --bare --disable-sandboxing -k local default " + Home + "/opam-repository" +
			" && opam clean -a -c --logs && rm -rf " + Home + "/.opam/log " + Home + "/.opam/download-cache" +
			// opam keeps the repository as a tar.gz of the files as it copied them (times
			// of the build, entries in directory order): made again sorted, with fixed
			// times and owners, so that the same repository gives the same image.
			" && if [ -f " + Home + "/.opam/repo/default.tar.gz ]; then d=$(mktemp -d) && tar -xzf " + Home + "/.opam/repo/default.tar.gz -C $d" +
			" && tar --sort=name --mtime=@0 --owner=opam:1000 --group=opam:1000 --format=gnu -C $d -cf - default | gzip -n -9 > " + Home + "/.opam/repo/default.tar.gz" +
			" && rm -rf $d; fi"},
		root,
	}
}

// compilerOps install the distribution's OCaml and the image's packages.
func compilerOps(im Image) []spec.Op {
	text := "compiler image: the distribution's OCaml " + im.OCaml
	if len(im.Packages) > 0 {
		text += ", with " + strings.Join(im.Packages, " ")
	}
	return []spec.Op{
		spec.Comment{Text: text},
		spec.Run{Network: []string{"host"}, Shell: "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends " +
			strings.Join(append(slices.Clone(CompilerPackages), im.Packages...), " ") + " && v=$(ocamlc -version) && test \"$v\" = " + im.OCaml +
			" && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/log/alternatives.log /var/cache/ldconfig/aux-cache /var/cache/debconf/*-old"},
	}
}

// dockerfileName is the Dockerfile of a build in the build context.
func dockerfileName(b Build) string { return "dockerfiles/" + b.Name() }

// imageDockerfile is where an image keeps the Dockerfile that reproduces it.
func imageDockerfile(im Image) string {
	if im.OCaml == "" {
		return "/Dockerfile.opam"
	}
	return "/Dockerfile.ocaml"
}

func copyDockerfile(b Build) spec.Op {
	return spec.Copy{Src: []string{dockerfileName(b)}, Dst: imageDockerfile(b.Image)}
}

// Dockerfile is the Dockerfile that reproduces the build's image (everything but
// the copy of itself), with a note saying how its FROM image is made.
func (b Build) Dockerfile(from string) string {
	_, s := b.Specs(from)
	s = &spec.Spec{From: s.From, Ops: s.Ops[:len(s.Ops)-1]}
	o := b.Rootfs("")
	return fmt.Sprintf("# %s for %s, as kiln's base-images service builds it.\n"+
		"# The FROM image is Debian's root filesystem, made by:\n#   kiln base debian --suite %s --arch %s --packages %s\n"+
		"# (%s)\n# The build context holds opam-repository/, a copy of the opam repository.\n\n%s",
		b.Image.Name(), b.Arch.Name, o.Suite, o.Arch, strings.Join(o.Packages, ","), o.Recipe(), s.Dockerfile(spec.DockerfileOptions{}))
}

// WriteContext writes the Dockerfiles of builds into a build context dir, which
// holds (or will hold) the opam repository's copy as opam-repository/.
func WriteContext(dir string, builds []Build, from func(Build) string) error {
	for _, b := range builds {
		p := filepath.Join(dir, dockerfileName(b))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		for _, x := range []Build{b.opam(), b} {
			if err := os.WriteFile(filepath.Join(dir, dockerfileName(x)), []byte(x.Dockerfile(from(x))), 0o644); err != nil {
				return fmt.Errorf("build context: %w", err)
			}
		}
	}
	return nil
}
