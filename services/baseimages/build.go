package baseimages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/registry"
)

// Runner runs the builder specs of the images and reads their results.
type Runner interface {
	// Build runs s with the build context contextDir on the fleet pool, writing its
	// log to log, and returns the builder snapshot of its last step.
	Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (snapshot string, err error)
	// Mount gives a read-only view of a snapshot's root filesystem until release.
	Mount(snapshot string) (dir string, release func(), err error)
}

// Inputs are what an image is built from; a change of any of them makes a new image.
type Inputs struct {
	// OpamCommit is the opam repository's commit copied into the image, and
	// OpamDate its date (the time every entry of the image gets).
	OpamCommit string    `json:"opam_repository_commit"`
	OpamDate   time.Time `json:"opam_repository_date"`
	// Rootfs is the local name of the Debian root filesystem, RootfsID its digest,
	// Recipe the mmdebstrap command line that made it.
	Rootfs   string `json:"rootfs"`
	RootfsID string `json:"rootfs_id"`
	Recipe   string `json:"recipe"`
	// Spec is the digest of the builder spec.
	Spec string `json:"spec"`
	// Packages are the Debian packages the configuration adds to a compiler image.
	Packages []string `json:"packages,omitempty"`
}

// Moved names the inputs that differ between two builds (empty when none does).
func (in Inputs) Moved(old Inputs) []string {
	var out []string
	if in.OpamCommit != old.OpamCommit {
		out = append(out, fmt.Sprintf("opam repository %s -> %s", short(old.OpamCommit), short(in.OpamCommit)))
	}
	if in.Recipe != old.Recipe {
		out = append(out, "Debian recipe")
	} else if in.Rootfs != old.Rootfs {
		out = append(out, fmt.Sprintf("Debian root filesystem %s -> %s", old.Rootfs, in.Rootfs))
	} else if in.RootfsID != old.RootfsID {
		out = append(out, fmt.Sprintf("Debian root filesystem %s -> %s", short(strings.TrimPrefix(old.RootfsID, "sha256:")), short(strings.TrimPrefix(in.RootfsID, "sha256:"))))
	}
	packages := !slices.Equal(in.Packages, old.Packages)
	if packages {
		out = append(out, fmt.Sprintf("packages [%s] -> [%s]", strings.Join(old.Packages, " "), strings.Join(in.Packages, " ")))
	}
	if in.Spec != old.Spec && in.Recipe == old.Recipe && !packages {
		out = append(out, "build spec")
	}
	return out
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// Built is an image built for one architecture and kept in the OCI layout.
type Built struct {
	Name   string `json:"name"` // the build's name, debian-12-ocaml-4.13-amd64
	Image  string `json:"image"`
	Arch   string `json:"arch"`
	Digest string `json:"digest"`
	// Snapshot is the builder snapshot the image was made from.
	Snapshot string `json:"snapshot"`
	// Size is the compressed size of the image's layers.
	Size   int64  `json:"size"`
	Inputs Inputs `json:"inputs"`
	// Packages are the Debian packages in the image (name → version).
	Packages map[string]string `json:"packages"`
	// SBOM and Provenance are the image's SPDX document and provenance record.
	SBOM       json.RawMessage `json:"sbom"`
	Provenance json.RawMessage `json:"provenance"`
}

// Exporter makes OCI images of builder snapshots and keeps them in an OCI layout.
type Exporter struct {
	// Dir holds the layout (Dir/oci) and temporary files.
	Dir    string
	Runner Runner
	mu     sync.Mutex
}

func (e *Exporter) layout() (layout.Path, error) {
	dir := filepath.Join(e.Dir, "oci")
	if p, err := layout.FromPath(dir); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return "", err
	}
	return layout.Write(dir, empty.Index)
}

// Image reads an image kept in the layout.
func (e *Exporter) Image(digest string) (v1.Image, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.layout()
	if err != nil {
		return nil, err
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, err
	}
	return p.Image(h)
}

// Export makes the OCI image of build b from its snapshot: one layer of the whole
// root filesystem for an opam image; for a compiler image, its opam image (parent)
// and a layer of what the compiler's steps changed.
func (e *Exporter) Export(ctx context.Context, b Build, snapshot string, in Inputs, parent *Built) (Built, error) {
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
	}
	dir, release, err := e.Runner.Mount(snapshot)
	if err != nil {
		return Built{}, fmt.Errorf("export %s: snapshot %s: %w", b.Name(), snapshot, err)
	}
	defer release()
	cfg := registry.ImageConfig{
		Architecture: b.Arch.OCIArch, Variant: b.Arch.Variant,
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + Home, "OPAMYES=1", "OPAMCONFIRMLEVEL=unsafe-yes"},
		WorkingDir: Home, User: UserName, Cmd: []string{"/bin/bash"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    b.Image.Name(),
			"org.opencontainers.image.revision": in.OpamCommit,
			"org.ocaml.opam-repository.commit":  in.OpamCommit,
			"org.ocaml.distro":                  b.Image.Distro.Name,
		},
		History: "kiln base-images " + b.Name() + " (spec " + in.Spec + ")",
	}
	if b.Image.OCaml != "" {
		cfg.Labels["org.ocaml.compiler"] = b.Image.OCaml
	}
	opts := registry.AssembleOptions{Epoch: in.OpamDate, TempDir: e.Dir}
	src := registry.Rootfs{Dir: dir}
	if parent != nil {
		if opts.Parent, err = e.Image(parent.Digest); err != nil {
			return Built{}, fmt.Errorf("export %s: its opam image %s: %w", b.Name(), parent.Digest, err)
		}
		pdir, prelease, err := e.Runner.Mount(parent.Snapshot)
		if err != nil {
			return Built{}, fmt.Errorf("export %s: snapshot %s of its opam image: %w", b.Name(), parent.Snapshot, err)
		}
		defer prelease()
		diff, err := os.CreateTemp(e.Dir, "diff-*.tar")
		if err != nil {
			return Built{}, err
		}
		defer os.Remove(diff.Name())
		_, err = WriteDiff(ctx, diff, dir, pdir)
		if cerr := diff.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
		}
		src = registry.Rootfs{Tar: diff.Name()}
	}
	a, err := registry.Assemble(ctx, src, cfg, opts)
	if err != nil {
		return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
	}
	defer a.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.layout()
	if err != nil {
		return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
	}
	d, err := a.Image.Digest()
	if err != nil {
		return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
	}
	if _, err := p.Image(d); err != nil {
		if err := p.AppendImage(a.Image); err != nil {
			return Built{}, fmt.Errorf("export %s: keep the image: %w", b.Name(), err)
		}
	}
	size, err := imageSize(a.Image)
	if err != nil {
		return Built{}, err
	}
	pkgs, err := dpkgPackages(filepath.Join(dir, "var/lib/dpkg/status"))
	if err != nil {
		return Built{}, fmt.Errorf("export %s: %w", b.Name(), err)
	}
	out := Built{Name: b.Name(), Image: b.Image.Name(), Arch: b.Arch.Name, Digest: d.String(), Snapshot: snapshot, Size: size, Inputs: in, Packages: pkgs}
	if out.SBOM, err = sbom(b, out); err != nil {
		return Built{}, err
	}
	if out.Provenance, err = provenance(b, out); err != nil {
		return Built{}, err
	}
	return out, nil
}

func imageSize(img v1.Image) (int64, error) {
	ls, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range ls {
		s, err := l.Size()
		if err != nil {
			return 0, err
		}
		n += s
	}
	return n, nil
}

// SpecDigest identifies a spec's text.
func SpecDigest(s *spec.Spec) string {
	h := sha256.Sum256([]byte(s.String()))
	return "sha256:" + hex.EncodeToString(h[:])
}

// OpamContext writes the build context of an opam repository commit under dir
// (dir/<commit>: opam-repository/, the tree of the commit, and the builds'
// Dockerfiles) unless it is there, and returns it with the commit's date.
func OpamContext(ctx context.Context, gitDir, commit, dir string, builds []Build, from func(Build) string) (string, time.Time, error) {
	out, err := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "show", "-s", "--format=%ct", commit).Output()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("opam repository %s: commit %s: %w", gitDir, commit, err)
	}
	var secs int64
	if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &secs); err != nil {
		return "", time.Time{}, fmt.Errorf("opam repository %s: commit %s: date %q", gitDir, commit, out)
	}
	date := time.Unix(secs, 0).UTC()
	cdir := filepath.Join(dir, commit)
	repo := filepath.Join(cdir, "opam-repository")
	if _, err := os.Stat(filepath.Join(repo, "repo")); err != nil {
		tmp := repo + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return "", time.Time{}, err
		}
		archive := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "archive", commit)
		untar := exec.CommandContext(ctx, "tar", "-x", "-C", tmp)
		pipe, err := archive.StdoutPipe()
		if err != nil {
			return "", time.Time{}, err
		}
		untar.Stdin = pipe
		var stderr strings.Builder
		archive.Stderr, untar.Stderr = &stderr, &stderr
		if err := untar.Start(); err != nil {
			return "", time.Time{}, err
		}
		aerr := archive.Run()
		uerr := untar.Wait()
		if err := errors.Join(aerr, uerr); err != nil {
			return "", time.Time{}, fmt.Errorf("opam repository %s at %s: %w: %s", gitDir, short(commit), err, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(tmp, "repo")); err != nil {
			return "", time.Time{}, fmt.Errorf("opam repository %s at %s: not an opam repository (no repo file)", gitDir, short(commit))
		}
		if err := os.Rename(tmp, repo); err != nil {
			return "", time.Time{}, err
		}
	}
	if err := WriteContext(cdir, builds, from); err != nil {
		return "", time.Time{}, err
	}
	return cdir, date, nil
}

// sortedKeys are m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
