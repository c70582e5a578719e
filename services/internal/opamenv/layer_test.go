package opamenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/opam"
)

func opamFile(url string, sum opam.Checksum) []byte {
	s := "opam-version: \"2.0\"\n"
	if url != "" {
		s += "url {\n  src: \"" + url + "\"\n  checksum: \"" + sum.String() + "\"\n}\n"
	}
	return []byte(s)
}

func TestPrepare(t *testing.T) {
	tarball := []byte("lib sources")
	up := newUpstream(t, map[string][]byte{"/lib.tar.gz": tarball})
	a, err := NewArchives(t.TempDir(), ArchivesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pkg := func(s string, data []byte, files map[string][]byte) Package {
		p, _ := opam.ParsePackage(s)
		return Package{Package: p, Opam: data, Files: files}
	}
	base := []Package{
		pkg("ocaml-system.4.13.1", opamFile("", opam.Checksum{}), nil),
		pkg("lib.1.0", opamFile(up.URL+"/lib.tar.gz", sha256Of(tarball)), map[string][]byte{"files/fix.patch": []byte("--- a\n")}),
	}
	req := Request{Compiler: "ocaml-system.4.13.1", Install: []string{"lib.1.0", "ocaml-system.4.13.1"}, Packages: base}
	ctxDir := t.TempDir()
	l, err := Prepare(context.Background(), a, ctxDir, req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ctxDir, l.Dir)
	for _, want := range []string{"repo/repo", "repo/packages/lib/lib.1.0/opam", "repo/packages/lib/lib.1.0/files/fix.patch",
		"repo/packages/ocaml-system/ocaml-system.4.13.1/opam", "cache/" + CachePath(sha256Of(tarball))} {
		if _, err := os.Stat(filepath.Join(dir, want)); err != nil {
			t.Errorf("layer lacks %s: %v", want, err)
		}
	}
	if l.Archives != 1 || l.Hits != 0 || len(l.Online) != 0 {
		t.Errorf("layer = %+v, want one archive downloaded, nothing online", l)
	}

	cases := []struct {
		name       string
		change     func(r *Request)
		sameDigest bool
		online     bool
	}{
		{"the same packages again", func(r *Request) {}, true, false},
		{"the install order", func(r *Request) { r.Install = []string{"ocaml-system.4.13.1", "lib.1.0"} }, true, false},
		{"an opam file", func(r *Request) {
			r.Packages = []Package{base[0], pkg("lib.1.0", append(opamFile(up.URL+"/lib.tar.gz", sha256Of(tarball)), "# x\n"...), nil)}
		}, false, false},
		{"two packages of one archive", func(r *Request) {
			r.Packages = append([]Package{}, base...)
			r.Packages = append(r.Packages, pkg("lib-extra.1.0", opamFile(up.URL+"/lib.tar.gz", sha256Of(tarball)), nil))
		}, false, false},
		{"an upstream that fails", func(r *Request) {
			r.Packages = append([]Package{}, base...)
			r.Packages = append(r.Packages, pkg("gone.1.0", opamFile(up.URL+"/gone.tar.gz", sha256Of([]byte("gone"))), nil))
		}, false, true},
		{"a git source", func(r *Request) {
			r.Packages = append([]Package{}, base...)
			r.Packages = append(r.Packages, pkg("dev.1.0", []byte("opam-version: \"2.0\"\nurl { src: \"git+https://example.org/dev.git\" }\n"), nil))
		}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := req
			c.change(&r)
			l2, err := Prepare(context.Background(), a, ctxDir, r)
			if err != nil {
				t.Fatal(err)
			}
			if (l2.Digest == l.Digest) != c.sameDigest {
				t.Errorf("digest %s, first %s: want same %v", l2.Digest, l.Digest, c.sameDigest)
			}
			if l2.Archives > 0 && l2.Hits != l2.Archives {
				t.Errorf("archives %d, hits %d: the second layer downloaded again", l2.Archives, l2.Hits)
			}
			if (len(l2.Online) > 0) != c.online {
				t.Errorf("online %v, want some: %v", l2.Online, c.online)
			}
			net := l2.InstallOp().(spec.Run).HostNetwork()
			if net != c.online {
				t.Errorf("install has the network: %v, want %v", net, c.online)
			}
		})
	}

	t.Run("the switch in a folder of its own", func(t *testing.T) {
		withSwitch := func(pkgs ...Package) Layer {
			r := req
			r.Packages, r.Switch = pkgs, []string{"ocaml-system.4.13.1"}
			l, err := Prepare(context.Background(), a, ctxDir, r)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		l1 := withSwitch(base...)
		l2 := withSwitch(base[0], pkg("other.1.0", opamFile("", opam.Checksum{}), nil))
		if l1.SwitchDir == "" || l1.SwitchDir != l2.SwitchDir || l1.Digest == l2.Digest || l1.Digest == l.Digest {
			t.Errorf("switch folders %q and %q, layers %s and %s (without the switch %s): want one switch folder, three layers", l1.SwitchDir, l2.SwitchDir, l1.Digest, l2.Digest, l.Digest)
		}
		got, err := filepath.Glob(filepath.Join(ctxDir, l1.SwitchDir, "repo", "packages", "*", "*"))
		if err != nil || len(got) != 1 || filepath.Base(got[0]) != "ocaml-system.4.13.1" {
			t.Errorf("the switch's repository holds %v (%v), want ocaml-system.4.13.1 alone", got, err)
		}
		r := req
		r.Switch = []string{"ocaml-system.5.0.0"}
		if _, err := Prepare(context.Background(), a, ctxDir, r); err == nil || !strings.Contains(err.Error(), "ocaml-system.5.0.0") {
			t.Errorf("a switch package the layer lacks: %v, want an error naming it", err)
		}
	})

	bad := req
	bad.Packages = []Package{pkg("lib.1.0", opamFile(up.URL+"/lib.tar.gz", sha256Of([]byte("other"))), nil)}
	if _, err := Prepare(context.Background(), a, t.TempDir(), bad); err == nil || !strings.Contains(err.Error(), "lib.1.0") || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("Prepare with a wrong checksum: %v, want an error naming lib.1.0 and the mismatch", err)
	}
}

func TestLayerOps(t *testing.T) {
	cases := []struct {
		name    string
		l       Layer
		want    []string // in this order in the spec
		network bool
	}{
		{"offline install of the exact set", Layer{Dir: ".kiln-opam/abc", Compiler: "ocaml-system.4.13.1", Install: []string{"dune.3.22.2", "re.1.12.0"}},
			[]string{"(copy (src .kiln-opam/abc/repo) (dst /var/lib/kiln/opam-repository))",
				"opam init --bare -n --disable-sandboxing -k local default /var/lib/kiln/opam-repository",
				"(copy (src .kiln-opam/abc/cache) (dst /root/.opam/download-cache))",
				"opam switch create default ocaml-system.4.13.1",
				"(shell opam exec -- /bin/bash -c)",
				"opam install dune.3.22.2 re.1.12.0"}, false},
		{"local pins stay offline", Layer{Dir: "d", Compiler: "ocaml-system.4.13.1", Install: []string{"dune.3.22.2"}, Pins: []Pin{{"cppo.dev", "/src/"}}},
			[]string{"opam pin add -yn cppo.dev /src/ && opam install dune.3.22.2"}, false},
		{"the switch made first, then the rest", Layer{Dir: ".kiln-opam/abc", Compiler: "ocaml-system.4.13.1", Install: []string{"dune.3.22.2"},
			Switch: []string{"ocaml-system.4.13.1", "ocaml.4.13.1"}, SwitchDir: ".kiln-opam/sw"},
			[]string{"(copy (src .kiln-opam/sw/repo) (dst /var/lib/kiln/opam-repository))",
				"opam init --bare -n --disable-sandboxing -k local default /var/lib/kiln/opam-repository",
				"(copy (src .kiln-opam/sw/cache) (dst /root/.opam/download-cache))",
				"opam switch create default ocaml-system.4.13.1 && opam install --switch default ocaml.4.13.1",
				"(copy (src .kiln-opam/abc/repo) (dst /var/lib/kiln/opam-repository))",
				"(copy (src .kiln-opam/abc/cache) (dst /root/.opam/download-cache))",
				"opam update default",
				"(shell opam exec -- /bin/bash -c)",
				"opam install dune.3.22.2"}, false},
		{"a pin-depends URL needs the network", Layer{Dir: "d", Compiler: "ocaml-system.4.13.1", Install: []string{"mylib.1.0"}, Pins: []Pin{{"mylib.1.0", "git+https://example.org/mylib.git#main"}}},
			[]string{"opam pin add -yn mylib.1.0 'git+https://example.org/mylib.git#main' && opam install mylib.1.0"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &spec.Spec{From: "img", Ops: c.l.Ops()}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			text := s.String()
			if _, err := spec.ParseString(text); err != nil {
				t.Fatalf("spec does not parse: %v\n%s", err, text)
			}
			at := 0
			for _, w := range c.want {
				i := strings.Index(text[at:], w)
				if i < 0 {
					t.Fatalf("spec lacks %q after offset %d:\n%s", w, at, text)
				}
				at += i
			}
			if got := c.l.InstallOp().(spec.Run).HostNetwork(); got != c.network {
				t.Errorf("install network %v, want %v", got, c.network)
			}
			for _, op := range c.l.Setup() {
				if r, ok := op.(spec.Run); ok && r.HostNetwork() {
					t.Errorf("setup step has the network: %s", spec.OpString(op))
				}
			}
		})
	}
}
