// Package opamenv is the opam layer of a build, as the services that build OCaml
// packages in the builder's sandbox share it (ocaml-ci; opam-repo-ci and the health
// check next): an opam root made in the sandbox over a repository holding exactly the
// packages to install, their source archives in opam's download cache, a switch on the
// image's compiler (ocaml-system), pins, and `opam install` of the exact set.
//
// The service side makes the layer with Prepare: it writes the repository and the
// archives (fetched once through the fleet's Archives cache and verified against
// opam's checksums) into the build context, under a folder named by their digest. The
// spec side takes the Layer's ops: Setup (repository, opam init, download cache,
// switch) and InstallOp (pins, then the set), with nothing but the archives in between,
// so a build whose set is unchanged reuses the builder's cached layer, and the install
// runs without network when every source is in the cache.
package opamenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Root is opam's root in the sandbox.
const Root = "/root/.opam"

// RepositoryDir is where the layer's repository is copied in the sandbox.
const RepositoryDir = "/var/lib/kiln/opam-repository"

// Switch is the name of the switch the layer makes.
const Switch = "default"

// ContextDir is the folder of the build context layers are written in; services leave
// it out of the copies of their source trees.
const ContextDir = ".kiln-opam"

// Package is one package version of a layer's repository: its opam file and the other
// files of its package directory (files/…), by path relative to that directory.
type Package struct {
	opam.Package
	Opam  []byte
	Files map[string][]byte
}

// FromRepository turns packages of an index of the opam repository at gitDir (loaded
// from a commit) into layer packages, reading the files of those whose directory has
// more than the opam file.
func FromRepository(ctx context.Context, gitDir, commit string, pkgs []*repository.Package) ([]Package, error) {
	out := make([]Package, 0, len(pkgs))
	for _, p := range pkgs {
		lp := Package{Package: p.Package, Opam: p.Data}
		if len(p.Extra) > 0 {
			blobs, err := repository.ReadTree(ctx, gitDir, commit, p.Path)
			if err != nil {
				return nil, fmt.Errorf("opam repository at %.12s: files of %s: %w", commit, p.Package, err)
			}
			lp.Files = map[string][]byte{}
			for rel, b := range blobs {
				if rel != "opam" {
					lp.Files[rel] = b.Data
				}
			}
		}
		out = append(out, lp)
	}
	return out, nil
}

// Pin is a package pinned before the install: to a folder of the sandbox (a project's
// own opam files) or to a URL (pin-depends, fetched at build time).
type Pin struct {
	Package string `json:"package"` // name.version
	Target  string `json:"target"`
}

func (p Pin) local() bool {
	return strings.HasPrefix(p.Target, "/") || strings.HasPrefix(p.Target, ".")
}

// Request is what a layer is made of.
type Request struct {
	// Compiler is the package the switch is created with, e.g. "ocaml-system.4.13.1".
	Compiler string
	// Install is the exact set installed, as name.version (the solver's answer).
	Install []string
	// Packages are the repository: the opam files of every package of Install that is
	// not pinned, Compiler's among them.
	Packages []Package
	// Pins are pinned, in order, before the install.
	Pins []Pin
	// Switch, when set, lists the packages of Packages (name.version) the switch is
	// made of, Compiler among them: the layer then makes the switch over a repository
	// of those alone, before it adds the others, so that layers on the same switch
	// share those steps (and the builder's cached layers).
	Switch []string
}

// Layer is a prepared layer, as a spec needs it. It is plain data (JSON), so a service
// can keep it in its plan.
type Layer struct {
	// Dir is the layer's folder in the build context ('/'-separated): repo/, an opam
	// repository, and cache/, opam's download-cache layout.
	Dir      string   `json:"dir"`
	Digest   string   `json:"digest"`
	Compiler string   `json:"compiler"`
	Install  []string `json:"install"`
	Pins     []Pin    `json:"pins,omitempty"`
	// Switch lists the packages the switch is made of before the rest of the
	// repository comes (Request.Switch); SwitchDir is the folder of the build context
	// holding their repository (repo/) and archives (cache/).
	Switch    []string `json:"switch,omitempty"`
	SwitchDir string   `json:"switch_dir,omitempty"`
	// Online lists the sources the cache could not keep or get (version-control URLs,
	// sources without checksums, upstreams that failed): when there are some, the
	// install step has the network and opam fetches them itself.
	Online []string `json:"online,omitempty"`
	// Archives counts the source archives in cache/; Hits those that were in the
	// archive cache already.
	Archives int `json:"archives"`
	Hits     int `json:"hits"`
}

// Prepare writes the layer of req into the build context ctxDir, under
// ContextDir/DIGEST (left as it is when it exists), fetching the sources of its
// packages through archives. A source that fails its checksum is an error naming the
// package and URL; one the cache cannot keep or get is left to the build (Online).
// With Switch, the switch's repository and archives go to a folder of their own,
// ContextDir/DIGEST of them (SwitchDir), which layers on the same switch share.
func Prepare(ctx context.Context, archives *Archives, ctxDir string, req Request) (Layer, error) {
	l := Layer{Compiler: req.Compiler, Install: req.Install, Pins: req.Pins, Switch: req.Switch}
	repoFile := []byte("opam-version: \"2.0\"\n")
	files := map[string][]byte{"repo/repo": repoFile}
	cache := map[string]string{} // path in the layer → archive in the cache
	inSwitch := map[string]bool{}
	for _, p := range req.Switch {
		inSwitch[p] = true
	}
	switchFiles, switchCache := map[string][]byte{"repo/repo": repoFile}, map[string]string{}
	for _, p := range req.Packages {
		dir := fmt.Sprintf("repo/packages/%s/%s/", p.Name, p.Package)
		files[dir+"opam"] = p.Opam
		for rel, data := range p.Files {
			if strings.Contains("/"+rel+"/", "/../") {
				return l, fmt.Errorf("%s: file %q leaves the package directory", p.Package, rel)
			}
			files[dir+rel] = data
		}
		sw := inSwitch[p.Package.String()]
		if sw {
			delete(inSwitch, p.Package.String())
			for k, v := range files {
				if strings.HasPrefix(k, dir) {
					switchFiles[k] = v
				}
			}
		}
		f, err := opam.Parse(dir+"opam", p.Opam)
		if err != nil {
			return l, err
		}
		srcs, err := sources(f)
		if err != nil {
			return l, fmt.Errorf("%s: %w", p.Package, err)
		}
		for _, u := range srcs {
			ar, err := archives.Get(ctx, u)
			if errors.Is(err, ErrNotCacheable) || errors.Is(err, ErrFetch) {
				// The build fetches it itself, with the network.
				l.Online = append(l.Online, fmt.Sprintf("%s: %s", p.Package, u.Src))
				continue
			}
			if err != nil {
				return l, fmt.Errorf("source of %s: %w", p.Package, err)
			}
			p := "cache/" + filepath.ToSlash(CachePath(ar.Checksum))
			if _, seen := cache[p]; !seen && ar.Hit {
				l.Hits++
			}
			cache[p] = ar.Path
			if sw {
				switchCache[p] = ar.Path
			}
		}
	}
	if len(inSwitch) > 0 {
		return l, fmt.Errorf("the switch's packages %v are not among the layer's", slices.Sorted(maps.Keys(inSwitch)))
	}
	l.Archives = len(cache)
	if len(req.Switch) > 0 {
		l.SwitchDir = ContextDir + "/" + layerDigest(switchFiles, switchCache)
		if err := writeOnce(ctxDir, l.SwitchDir, switchFiles, switchCache); err != nil {
			return l, err
		}
		files["switch"] = []byte(l.SwitchDir + "\n") // the layer's digest covers its switch's
	}
	l.Digest = layerDigest(files, cache)
	l.Dir = ContextDir + "/" + l.Digest
	return l, writeOnce(ctxDir, l.Dir, files, cache)
}

// writeOnce writes the files and archives under dir of the build context ctxDir,
// unless dir is there already.
func writeOnce(ctxDir, dir string, files map[string][]byte, cache map[string]string) error {
	dst := filepath.Join(ctxDir, filepath.FromSlash(dir))
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := write(dst, files, cache); err != nil {
		return fmt.Errorf("opam layer in %s: %w", ctxDir, err)
	}
	return nil
}

// sources lists a package's url and extra-source sections.
func sources(f *opam.File) ([]opam.URL, error) {
	var out []opam.URL
	u, err := f.URL()
	if err != nil {
		return nil, err
	}
	if u != nil && u.Src != "" {
		out = append(out, *u)
	}
	extra, err := f.ExtraSources()
	if err != nil {
		return nil, err
	}
	for _, e := range extra {
		out = append(out, e.URL)
	}
	return out, nil
}

func layerDigest(files map[string][]byte, cache map[string]string) string {
	h := sha256.New()
	for _, p := range slices.Sorted(maps.Keys(files)) {
		sum := sha256.Sum256(files[p])
		fmt.Fprintf(h, "%s %x\n", p, sum)
	}
	for _, p := range slices.Sorted(maps.Keys(cache)) {
		fmt.Fprintf(h, "%s\n", p) // named by its checksum
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// write makes the layer's folder beside dst and renames it into place.
func write(dst string, files map[string][]byte, cache map[string]string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "cache"), 0o755); err != nil {
		return err
	}
	for p, data := range files {
		full := filepath.Join(tmp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			return err
		}
	}
	for p, src := range cache {
		full := filepath.Join(tmp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := linkOrCopy(src, full); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return nil // written meanwhile by another analysis
		}
		return err
	}
	return nil
}

func linkOrCopy(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Setup are the ops that make the switch: the env of opam, the repository copied in
// and `opam init` over it (bare, no sandboxing inside the sandbox), the archives into
// opam's download cache, and the switch on the compiler, made without network; then
// every later step runs in the switch's environment (`opam exec --`). With Switch,
// the switch is made of those packages over their repository alone, then the rest of
// the repository and archives come and opam reads the repository again.
func (l Layer) Setup() []spec.Op {
	ops := []spec.Op{
		spec.Env{Name: "OPAMROOT", Value: Root},
		spec.Env{Name: "OPAMYES", Value: "1"},
		spec.Env{Name: "OPAMCOLOR", Value: "never"},
	}
	initOp := spec.Run{Shell: "opam init --bare -n --disable-sandboxing -k local default " + RepositoryDir}
	create := "opam switch create " + Switch + " " + shellQuote(l.Compiler)
	if len(l.Switch) == 0 {
		ops = append(ops,
			spec.Copy{Src: []string{l.Dir + "/repo"}, Dst: RepositoryDir},
			initOp,
			spec.Copy{Src: []string{l.Dir + "/cache"}, Dst: Root + "/download-cache"},
			spec.Run{Shell: create})
	} else {
		var rest []string
		for _, p := range l.Switch {
			if p != l.Compiler {
				rest = append(rest, p)
			}
		}
		if len(rest) > 0 {
			create += " && opam install --switch " + Switch + " " + strings.Join(quoteAll(rest), " ")
		}
		ops = append(ops,
			spec.Copy{Src: []string{l.SwitchDir + "/repo"}, Dst: RepositoryDir},
			initOp,
			spec.Copy{Src: []string{l.SwitchDir + "/cache"}, Dst: Root + "/download-cache"},
			spec.Run{Shell: create},
			spec.Copy{Src: []string{l.Dir + "/repo"}, Dst: RepositoryDir},
			spec.Copy{Src: []string{l.Dir + "/cache"}, Dst: Root + "/download-cache"},
			spec.Run{Shell: "opam update default"})
	}
	return append(ops, spec.Shell{Args: []string{"opam", "exec", "--", "/bin/bash", "-c"}})
}

// InstallOp is the op that pins the layer's pins and installs its exact set; it has
// the network only when a pin or a source needs it.
func (l Layer) InstallOp() spec.Op {
	var b strings.Builder
	network := len(l.Online) > 0
	for _, p := range l.Pins {
		fmt.Fprintf(&b, "opam pin add -yn %s %s && ", shellQuote(p.Package), shellQuote(p.Target))
		network = network || !p.local()
	}
	if len(l.Install) == 0 {
		b.WriteString("true")
	} else {
		b.WriteString("opam install " + strings.Join(quoteAll(l.Install), " "))
	}
	r := spec.Run{Shell: b.String()}
	if network {
		r.Network = []string{"host"}
	}
	return r
}

// Ops are Setup and InstallOp with nothing in between.
func (l Layer) Ops() []spec.Op { return append(l.Setup(), l.InstallOp()) }

// Describe says in a line what the layer installs and where its sources come from.
func (l Layer) Describe() string {
	s := fmt.Sprintf("opam layer %s: %d packages on %s, %d source archives (%d in the cache already)",
		l.Digest, len(l.Install), l.Compiler, l.Archives, l.Hits)
	if len(l.Online) > 0 {
		s += "; with the network for " + strings.Join(l.Online, ", ")
	}
	return s
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = shellQuote(x)
	}
	return out
}

// shellQuote quotes s for the shell when it holds anything but plain word characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/:=~@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
