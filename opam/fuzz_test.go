package opam

import (
	"strings"
	"testing"
)

// FuzzParse checks that parsing never panics, that errors carry a position, and that
// whatever parses prints to text that parses back to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`opam-version: "2.0"`,
		"depends: [\"a\" {>= \"1\" & build} (\"b\" | \"c\")]\n",
		"url { src: \"x\" checksum: [\"sha256=00\"] }",
		"extra-source \"a\" { src: \"x\" }",
		`x: !a & ?b | c = d {e} [f += "g" h =+= "i"] -1 true`,
		"x: \"\"\"tri\"ple\"\"\" (* c (* n *) *) # l\n",
		`x: "\x41\065\n\\\"" y: a+b:c _:d`,
		"build: [[\"make\" \"-j%{jobs}%\"] {os != \"win32\"}]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		file, err := ParseString("fuzz", src)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		printed := file.String()
		again, err := ParseString("printed", printed)
		if err != nil {
			t.Fatalf("printed text does not parse: %v\ninput: %q\nprinted: %q", err, src, printed)
		}
		if !EqualFiles(file, again) {
			t.Fatalf("round trip changed the value\ninput: %q\nprinted: %q", src, printed)
		}
		if twice := again.String(); twice != printed {
			t.Fatalf("printing is not stable\ninput: %q\nprinted: %q\nthen: %q", src, printed, twice)
		}
		// The typed accessors must not panic either.
		file.Depends()
		file.Conflicts()
		file.Available()
		file.Build()
		file.URL()
		file.Depexts()
		file.PinDepends()
		file.ExtraFiles()
	})
}
