package lint

import (
	"testing"

	"github.com/kiln-ci/kiln/opam"
)

// FuzzLint checks that no opam file, however odd, makes the lint panic.
func FuzzLint(f *testing.F) {
	f.Add(clean)
	f.Add("depends: [(\"a\" | \"b\" {!build & post}) \"c\" {\"x\" & test}]\nconflicts: [\"a\" & \"b\" {< \"1\"}]")
	f.Add("license: \"(MIT OR\"\nextra-files: [\"a\" \"md5=00\"]\nflags: [conf plugin]\ndepexts: [[\"\"]]")
	f.Add("url { src: \"git+file://../x\" checksum: [] }\navailable: os = \"darwin\" & %{x")
	f.Fuzz(func(t *testing.T, text string) {
		in := Input{Package: opam.Package{Name: "conf-arch-x", Version: "1"}, Dir: "packages/x/x.1",
			Files: map[string]File{"opam": {Data: []byte(text)}, "files/a": {Data: []byte("a")}}}
		for _, v := range []string{"", "2.1"} {
			ctx := Context{Checks: OpamLint | Publication | Archive, New: true, Names: NewNames([]opam.PackageName{"conf-arch_x"}), CheckUpstream: true, Opam: v}
			for _, f := range Lint(in, ctx) {
				if _, ok := RuleByID(f.Rule); !ok {
					t.Fatalf("finding with a rule outside the catalogue: %s", f)
				}
			}
		}
	})
}
