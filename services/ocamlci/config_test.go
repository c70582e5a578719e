package ocamlci

import (
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/services/internal/matrix"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`
platforms:
  skip: ["*_arm64"]
opam-repositories:
  - name: mine
    url: https://example.org/opam-repo.git
lint:
  fmt: false
test-commands:
  - dune build @slow
bench:
  command: make bench
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Lint.FmtEnabled() || !c.Lint.DocEnabled() || !c.Lint.OpamEnabled() {
		t.Errorf("lint toggles wrong: %+v", c.Lint)
	}
	if len(c.OpamRepositories) != 1 || c.OpamRepositories[0].Name != "mine" || len(c.TestCommands) != 1 {
		t.Errorf("config = %+v", c)
	}
	ps, err := Select(matrix.Default(), c.Platforms)
	if err != nil || len(ps) != 1 || ps[0].Arch != "amd64" {
		t.Fatalf("Select = %v, %v; want the amd64 platform only", ps, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"lint:\n  fmtt: false\n", "field fmtt not found"},
		{"platforms: [a\n", ".kiln.yml:"},
		{"opam-repositories:\n  - name: a\n", "url is missing"},
		{"opam-repositories:\n  - {name: a, url: x}\n  - {name: a, url: y}\n", "used twice"},
		{"test-commands: ['  ']\n", "test-commands[0] is empty"},
		{"platforms:\n  skip: ['[']\n", "not a platform name or pattern"},
		{"lint: {}\n---\nlint: {}\n", "only one YAML document"},
	} {
		_, err := ParseConfig([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) error = %v, want it to mention %q", tc.src, err, tc.want)
		}
	}
	_, err := Select(matrix.Default(), PlatformSelection{Skip: []string{"windows-*"}})
	if err == nil || !strings.Contains(err.Error(), "matches no platform") {
		t.Errorf("Select with an unknown platform: %v", err)
	}
}

func TestEmptyConfigIsDefaults(t *testing.T) {
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Select(matrix.Default(), c.Platforms)
	if err != nil || len(ps) != 2 {
		t.Fatalf("defaults select %d platforms (%v), want 2", len(ps), err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("platforms:\n  skip: [a]\nlint:\n  fmt: false\n"))
	f.Add([]byte("opam-repositories:\n  - name: x\n    url: y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil {
			if err := c.validate(); err != nil {
				t.Fatalf("accepted config fails validation: %v", err)
			}
		}
	})
}
