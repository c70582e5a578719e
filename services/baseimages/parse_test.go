package baseimages

import (
	"bufio"
	"maps"
	"strings"
	"testing"
)

func TestParseDpkgStatus(t *testing.T) {
	cases := []struct {
		name, status string
		want         map[string]string
	}{
		{"installed only", "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
			map[string]string{"bash": "5.2.15-2"}},
		{"continuation lines and no final blank line", "Package: opam\nStatus: install ok installed\nDescription: x\n Version: not this\nVersion: 2.1.2-1",
			map[string]string{"opam": "2.1.2-1"}},
		{"empty", "", map[string]string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseDpkgStatus(bufio.NewScanner(strings.NewReader(c.status)))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestParseReleaseDate(t *testing.T) {
	cases := []struct{ name, release, want, err string }{
		{"debian", "Origin: Debian\nSuite: stable\nDate: Sat, 15 Nov 2025 09:45:12 UTC\n", "20251115", ""},
		{"numeric zone", "Date: Sat, 15 Nov 2025 09:45:12 +0000\n", "20251115", ""},
		{"no date", "Origin: Debian\n", "", "no Date field"},
		{"bad date", "Date: yesterday\n", "", `date "yesterday"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseReleaseDate(strings.NewReader(c.release))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{"", "arches: [amd64]", "distros: [{name: debian-13, retired: true}]\nretired-ocaml: ['4.13']", "ocaml: ['5.3']\nopam: [distro]", "refresh: 1h",
		"packages: [ocaml-dune, ocaml-findlib]\ndistros: [{name: debian-12, packages: [ocaml-odoc, ocaml-nox]}]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig([]byte(s))
		if err != nil {
			return
		}
		p := c.Plan()
		for _, tg := range p.Tags {
			if tg.Name == "" || tg.Image == "" {
				t.Fatalf("tag %+v of a valid config", tg)
			}
		}
		for _, b := range p.Builds {
			if _, ok := LookupArch(b.Arch.Name); !ok {
				t.Fatalf("build on unknown architecture %+v", b)
			}
			for _, pkg := range b.Image.Packages {
				if !debianPackageName.MatchString(pkg) {
					t.Fatalf("build %s installs %q, not a Debian package name", b.Name(), pkg)
				}
			}
		}
	})
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add("Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n")
	f.Add("Package:\nVersion:\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseDpkgStatus(bufio.NewScanner(strings.NewReader(s)))
		if err != nil {
			return
		}
		for k, v := range got {
			if k == "" || v == "" {
				t.Fatalf("empty name or version: %q=%q", k, v)
			}
		}
	})
}
