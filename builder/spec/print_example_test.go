package spec_test

import (
	"fmt"

	"github.com/kiln-ci/kiln/builder/spec"
)

func ExampleSpec_String() {
	s, err := spec.ParseString(`((build dev ((from ocaml/opam) (run (shell "make")))) (from debian:12) (copy (from (build dev)) (src /src/main.exe) (dst /usr/local/bin/main)) (run (network host) (shell "main")))`)
	if err != nil {
		panic(err)
	}
	fmt.Print(s)
	// Output:
	// ((build dev
	//    ((from ocaml/opam)
	//     (run (shell make))))
	//  (from debian:12)
	//  (copy (from (build dev)) (src /src/main.exe) (dst /usr/local/bin/main))
	//  (run (network host)
	//       (shell main)))
}
