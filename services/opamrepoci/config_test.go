package opamrepoci

import (
	"strings"
	"testing"
)

// sampleConfig is the example of docs/opam-repo-ci.md.
const sampleConfig = `
platforms:
  - name: debian-12-4.13_amd64          # built in: Debian 12's OCaml 4.13 and opam 2.1
  - name: debian-12-4.13_arm64
  - name: debian-12-5.3_amd64
    distro: debian-12
    ocaml: "5.3"
    arch: amd64
    pool: linux-x86_64
    image: docker.io/ocaml/opam:debian-12-ocaml-5.3
    vars: {os: linux, os-family: debian, os-distribution: debian, os-version: "12", arch: x86_64,
           opam-version: "2.3.0", "ocaml:version": "5.3.0"}
  - name: debian-12-5.3-opam-2.4_amd64
    distro: debian-12
    ocaml: "5.3"
    arch: amd64
    pool: linux-x86_64
    image: docker.io/ocaml/opam:debian-12-ocaml-5.3
    opam: /usr/bin/opam-2.4
    vars: {os: linux, os-distribution: debian, arch: x86_64, opam-version: "2.4.0", "ocaml:version": "5.3.0"}
compilers:
  - platform: debian-12-4.13_amd64
  - platform: debian-12-5.3_amd64
architectures:
  - platform: debian-12-4.13_arm64
    label: arm64
opam-versions:
  - platform: debian-12-5.3-opam-2.4_amd64
    label: opam-2.4
    revdeps: false
background-revdeps: 500
`

func TestParseConfig(t *testing.T) {
	c, err := Parse("sample.yml", []byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range c.targets() {
		got = append(got, strings.Join([]string{string(tg.group), tg.label, tg.platform.Name}, " "))
		if tg.lowerBounds != (tg.group == Compilers) || tg.revdeps != (tg.group == Compilers) {
			t.Errorf("%s %s: lower bounds %v, revdeps %v", tg.group, tg.label, tg.lowerBounds, tg.revdeps)
		}
	}
	want := "compilers 4.13 debian-12-4.13_amd64; compilers 5.3 debian-12-5.3_amd64; " +
		"architectures arm64 debian-12-4.13_arm64; opam-versions opam-2.4 debian-12-5.3-opam-2.4_amd64"
	if strings.Join(got, "; ") != want {
		t.Errorf("targets %q\nwant     %q", strings.Join(got, "; "), want)
	}
	if c.opam["debian-12-5.3-opam-2.4_amd64"] != "/usr/bin/opam-2.4" || c.backgroundRevdeps() != 500 {
		t.Errorf("opam binaries %v, background revdeps %d", c.opam, c.backgroundRevdeps())
	}
	if got := strings.Join(c.Pools(), ","); got != "linux-x86_64,linux-arm64" {
		t.Errorf("pools %s", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", ``, "compilers: at least one platform"},
		{"unknown field", "compiler: []", "field compiler not found"},
		{"unknown platform", "compilers: [{platform: nope}]", `unknown platform "nope"`},
		{"label with a comma", "platforms: [{name: debian-12-4.13_amd64}]\ncompilers: [{platform: debian-12-4.13_amd64, label: 'a,b'}]", `label "a,b"`},
		{"label twice", "platforms: [{name: debian-12-4.13_amd64}, {name: debian-12-4.13_arm64}]\ncompilers: [{platform: debian-12-4.13_amd64}, {platform: debian-12-4.13_arm64}]", `label "4.13" used twice`},
		{"platform twice", "platforms: [{name: debian-12-4.13_amd64}, {name: debian-12-4.13_amd64}]", "defined twice"},
		{"no image", "platforms: [{name: x, distro: d, ocaml: '5.3', arch: amd64, pool: p}]", "no image"},
		{"no solver variables", "platforms: [{name: x, distro: d, ocaml: '5.3', arch: amd64, pool: p, image: i, vars: {os: linux}}]", "vars: no arch"},
		{"negative threshold", "platforms: [{name: debian-12-4.13_amd64}]\ncompilers: [{platform: debian-12-4.13_amd64}]\nbackground-revdeps: -1", "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "c.yml: ") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := Default()
	if len(c.targets()) != 2 || c.targets()[0].platform.Image == "" || c.targets()[1].platform.Arch != "arm64" {
		t.Errorf("default targets %+v", c.targets())
	}
}
