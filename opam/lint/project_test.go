package lint

import (
	"os"
	"strings"
	"testing"
)

func TestLintProjectFile(t *testing.T) {
	sexplib0, err := os.ReadFile("testdata/project/sexplib0.v0.15.1.opam")
	if err != nil {
		t.Fatal(err)
	}
	noMaintainer := strings.Replace(string(sexplib0), "maintainer: \"Jane Street developers\"\n", "", 1)
	cases := []struct {
		name, file, data string
		want             []string // the findings, as Finding.String gives them
	}{
		// sexplib0 v0.15.1's own opam file: a version field that is not "dev", no
		// name field; `opam lint` says Passed.
		{"sexplib0 v0.15.1", "sexplib0.opam", string(sexplib0), nil},
		{"the same as a root opam file", "opam", string(sexplib0), nil},
		{"the same in a package folder", "sexplib0/opam", string(sexplib0), nil},
		{"a finding names the file, once", "sub/sexplib0.opam", noMaintainer,
			[]string{"sub/sexplib0.opam: error opam-23: Missing field 'maintainer'"}},
		{"a name that differs from the file's", "other.opam", "name: \"sexplib0\"\n" + string(sexplib0),
			[]string{`other.opam:1:1: warning opam-4: Field 'name: "sexplib0"' while the directory name or pinning implied "other"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, f := range LintProjectFile(c.file, []byte(c.data)) {
				got = append(got, f.String())
				if strings.HasPrefix(f.Rule, "repo-") {
					t.Errorf("an opam-repository rule in a project's lint: %s", f)
				}
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}
