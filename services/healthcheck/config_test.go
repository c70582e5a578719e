package healthcheck

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, err := Parse("t", []byte(`repository: {url: /srv/opam-repository}
switches:
  - {name: "4.14", compiler: ocaml-base-compiler.4.14.2}
  - {name: "5.2", compiler: ocaml-base-compiler.5.2.1, build-with: dune}
`))
		if err != nil {
			t.Fatal(err)
		}
		if c.Repository.Branch != "master" || c.Versions != "latest" || time.Duration(c.JobTimeout) != DefaultJobTimeout ||
			c.Parallelism != DefaultParallelism || c.Retention != DefaultRetention || c.Retries != DefaultRetries {
			t.Errorf("defaults not filled: %+v", c)
		}
		if c.Switches[0].BuildWith != BuildWithOpam || c.Switches[1].BuildWith != BuildWithDune {
			t.Errorf("build-with: %+v", c.Switches)
		}
		if p, err := c.platform(); err != nil || p.Pool != "linux-x86_64" {
			t.Errorf("platform %+v, %v", p, err)
		}
	})
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"not yaml", "switches: [", []string{"configuration t", "yaml"}},
		{"unknown field", "repository: {url: x}\nswitchs: []\n", []string{"field switchs not found"}},
		{"nothing", "", []string{"repository.url", "switches: give at least one"}},
		{"bad switch", `repository: {url: x}
versions: some
switches:
  - {name: "a b", compiler: ocaml}
  - {name: x, compiler: ocaml-base-compiler.5.2.1, build-with: make}
  - {name: x, compiler: ocaml-base-compiler.5.2.1}
`, []string{`versions: "some"`, `switches[0]: name "a b"`, `switches[1]: switch x: build-with "make"`, `switch "x" is defined twice`}},
		{"bad duration", "repository: {url: x}\njob-timeout: soon\n", []string{`"soon" is not a duration`}},
		{"unknown platform", "repository: {url: x}\nplatform: {name: solaris}\nswitches: [{name: a, compiler: ocaml-system.4.13.1}]\n", []string{`"solaris" is not a built-in platform`}},
		{"webhook", "repository: {url: x}\nswitches: [{name: a, compiler: ocaml-system.4.13.1}]\nwebhooks: [{name: w, kind: email}]\n", []string{"webhooks[0]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t", []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error for:\n%s", c.yaml)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("repository: {url: /x}\nswitches: [{name: a, compiler: ocaml-system.4.13.1}]\n"))
	f.Add([]byte("job-timeout: 1h\nretention: -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz", data)
		if err == nil && (len(c.Switches) == 0 || c.Repository.URL == "") {
			t.Errorf("accepted a configuration without switches or repository: %q", data)
		}
	})
}
