package baseimages

import (
	"strings"
	"testing"
)

func TestCompilerImagePackages(t *testing.T) {
	cases := []struct {
		name, yaml string
		packages   map[string]string // image → its packages
		install    map[string]string // build → the apt-get install line's packages
	}{
		{
			name:     "none configured",
			yaml:     "arches: [amd64]",
			packages: map[string]string{"debian-12-opam": "", "debian-12-ocaml-4.13": "", "debian-13-ocaml-5.3": ""},
			install:  map[string]string{"debian-12-ocaml-4.13-amd64": "ocaml-nox"},
		},
		{
			name:     "for every compiler image",
			yaml:     "arches: [amd64]\npackages: [ocaml-findlib, ocaml-dune]",
			packages: map[string]string{"debian-12-opam": "", "debian-12-ocaml-4.13": "ocaml-dune ocaml-findlib", "debian-13-ocaml-5.3": "ocaml-dune ocaml-findlib"},
			install:  map[string]string{"debian-12-ocaml-4.13-amd64": "ocaml-nox ocaml-dune ocaml-findlib", "debian-13-ocaml-5.3-amd64": "ocaml-nox ocaml-dune ocaml-findlib"},
		},
		{
			name:     "per distribution, each once, the compiler not twice",
			yaml:     "arches: [amd64]\npackages: [ocaml-dune]\ndistros: [{name: debian-12, packages: [ocaml-odoc, ocaml-dune, ocaml-nox]}, {name: debian-13}]",
			packages: map[string]string{"debian-12-ocaml-4.13": "ocaml-dune ocaml-odoc", "debian-13-ocaml-5.3": "ocaml-dune"},
			install:  map[string]string{"debian-12-ocaml-4.13-amd64": "ocaml-nox ocaml-dune ocaml-odoc", "debian-13-ocaml-5.3-amd64": "ocaml-nox ocaml-dune"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testPlan(t, c.yaml)
			text := p.String()
			for _, im := range p.Images {
				want, ok := c.packages[im.Name()]
				if got := strings.Join(im.Packages, " "); ok && got != want {
					t.Errorf("%s: packages %q, want %q", im.Name(), got, want)
				}
				if want != "" && !strings.Contains(text, "with "+want) {
					t.Errorf("the plan does not list %s with %s:\n%s", im.Name(), want, text)
				}
			}
			for _, b := range p.Builds {
				want, ok := c.install[b.Name()]
				if !ok {
					continue
				}
				_, full := b.Specs("kiln/debian:test")
				text := full.String()
				if !strings.Contains(text, "apt-get install -q -y --no-install-recommends "+want+" &&") {
					t.Errorf("%s: spec lacks the install of %q:\n%s", b.Name(), want, text)
				}
			}
		})
	}
}

func TestInputsMoved(t *testing.T) {
	old := Inputs{OpamCommit: "a1", Rootfs: "kiln/debian:bookworm-x", RootfsID: "sha256:1", Recipe: "r", Spec: "sha256:s1"}
	cases := []struct {
		name   string
		change func(*Inputs)
		want   string
	}{
		{"nothing", func(*Inputs) {}, ""},
		{"packages added", func(in *Inputs) { in.Packages, in.Spec = []string{"ocaml-dune", "ocaml-findlib"}, "sha256:s2" }, "packages [] -> [ocaml-dune ocaml-findlib]"},
		{"spec alone", func(in *Inputs) { in.Spec = "sha256:s2" }, "build spec"},
		{"opam repository and packages", func(in *Inputs) { in.OpamCommit, in.Packages, in.Spec = "b2", []string{"ocaml-dune"}, "sha256:s2" },
			"opam repository a1 -> b2; packages [] -> [ocaml-dune]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := old
			c.change(&in)
			if got := strings.Join(in.Moved(old), "; "); got != c.want {
				t.Errorf("moved %q, want %q", got, c.want)
			}
		})
	}
}
