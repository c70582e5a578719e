package baseimages

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown distro", "distros: [{name: fedora-41}]", `distros[0].name: unknown distribution "fedora-41" (known: debian-12, debian-13)`},
		{"distro twice", "distros: [{name: debian-12}, {name: debian-12}]", `distros[1].name: "debian-12" given twice`},
		{"unknown arch", "arches: [amd64, mips]", `arches[1]: unknown architecture "mips"`},
		{"ocaml not packaged", "ocaml: ['5.2']", "ocaml[0]: OCaml 5.2 is packaged by none of the distributions (debian-12 has 4.13, debian-13 has 5.3)"},
		{"ocaml not a version", "ocaml: [five]", `ocaml[0]: "five" is neither X.Y nor distro`},
		{"opam not packaged", "opam: ['2.4']", "opam[0]: opam 2.4 is packaged by none of the distributions"},
		{"bad snapshot", "distros: [{name: debian-12, snapshot: yesterday}]", `distros[0].snapshot: "yesterday" is not a date`},
		{"bad refresh", "refresh: weekly", `"weekly" is not a duration`},
		{"unknown field", "distro: [debian-12]", "field distro not found"},
		{"credentials without repository", "registry: {credentials-file: /p}", "registry.repository: credentials or a signing key given without a repository"},
		{"retired not a version", "retired-ocaml: [old]", `retired-ocaml[0]: "old" is not X.Y`},
		{"package with a space", "packages: [ocaml-dune, 'ocaml findlib']", `packages[1]: "ocaml findlib" is not a Debian package name`},
		{"distro package with a shell word", "distros: [{name: debian-12, packages: ['x;rm']}]", `distros[0].packages[0]: "x;rm" is not a Debian package name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte("registry: {repository: localhost:5000/ocaml/opam}\n"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"staging", c.Registry.Staging, "localhost:5000/ocaml/opam-staging"},
		{"branch", c.OpamRepository.Branch, "master"},
		{"latest", c.Latest, "debian"},
		{"arches", strings.Join(c.Arches, ","), "amd64,arm64"},
		{"distros", c.Distros[0].Name + "," + c.Distros[1].Name, "debian-12,debian-13"},
		{"refresh", time.Duration(c.Refresh).String(), "168h0m0s"},
	}
	for _, k := range checks {
		t.Run(k.name, func(t *testing.T) {
			if k.got != k.want {
				t.Errorf("%s = %q, want %q", k.name, k.got, k.want)
			}
		})
	}
}

func TestPlanTags(t *testing.T) {
	cases := []struct {
		name   string
		yaml   string
		builds []string
		tags   []string // name->image, with (d) for deprecated
	}{
		{
			name:   "default matrix",
			yaml:   "arches: [amd64, arm64]",
			builds: []string{"debian-12-opam-amd64", "debian-12-opam-arm64", "debian-12-ocaml-4.13-amd64", "debian-12-ocaml-4.13-arm64", "debian-13-opam-amd64", "debian-13-opam-arm64", "debian-13-ocaml-5.3-amd64", "debian-13-ocaml-5.3-arm64"},
			tags: []string{
				"debian-12-opam->debian-12-opam", "debian-12-ocaml-4.13->debian-12-ocaml-4.13",
				"debian-13-opam->debian-13-opam", "debian-13-ocaml-5.3->debian-13-ocaml-5.3",
				"debian-12->debian-12-ocaml-4.13", "debian-13->debian-13-ocaml-5.3",
				"debian-ocaml-5.3->debian-13-ocaml-5.3", "debian->debian-13-ocaml-5.3", "latest->debian-13-ocaml-5.3",
			},
		},
		{
			name:   "retired distro stays tagged, deprecated, not built; aliases move",
			yaml:   "arches: [amd64]\ndistros: [{name: debian-12}, {name: debian-13, retired: true}]",
			builds: []string{"debian-12-opam-amd64", "debian-12-ocaml-4.13-amd64"},
			tags: []string{
				"debian-12-opam->debian-12-opam", "debian-12-ocaml-4.13->debian-12-ocaml-4.13",
				"debian-13-opam->debian-13-opam(d)", "debian-13-ocaml-5.3->debian-13-ocaml-5.3(d)",
				"debian-12->debian-12-ocaml-4.13", "debian-13->debian-13-ocaml-5.3(d)",
				"debian-ocaml-4.13->debian-12-ocaml-4.13", "debian->debian-12-ocaml-4.13", "latest->debian-12-ocaml-4.13",
			},
		},
		{
			name:   "retired compiler",
			yaml:   "arches: [amd64]\ndistros: [{name: debian-12}]\nocaml: []\nretired-ocaml: ['4.13']",
			builds: []string{"debian-12-opam-amd64"},
			tags: []string{
				"debian-12-opam->debian-12-opam", "debian-12-ocaml-4.13->debian-12-ocaml-4.13(d)",
				"debian-12->debian-12-ocaml-4.13(d)",
			},
		},
		{
			name:   "one compiler chosen",
			yaml:   "arches: [arm64]\nocaml: ['5.3']",
			builds: []string{"debian-12-opam-arm64", "debian-13-opam-arm64", "debian-13-ocaml-5.3-arm64"},
			tags: []string{
				"debian-12-opam->debian-12-opam", "debian-13-opam->debian-13-opam", "debian-13-ocaml-5.3->debian-13-ocaml-5.3",
				"debian-13->debian-13-ocaml-5.3", "debian-ocaml-5.3->debian-13-ocaml-5.3", "debian->debian-13-ocaml-5.3", "latest->debian-13-ocaml-5.3",
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testPlan(t, c.yaml)
			var builds, tags []string
			for _, b := range p.Builds {
				builds = append(builds, b.Name())
			}
			for _, tg := range p.Tags {
				s := tg.Name + "->" + tg.Image
				if tg.Deprecated != "" {
					s += "(d)"
				}
				tags = append(tags, s)
			}
			if strings.Join(builds, " ") != strings.Join(c.builds, " ") {
				t.Errorf("builds:\n got %v\nwant %v", builds, c.builds)
			}
			if strings.Join(tags, " ") != strings.Join(c.tags, " ") {
				t.Errorf("tags:\n got %v\nwant %v", tags, c.tags)
			}
		})
	}
}
