package ocamlci

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-ci/kiln/git"
)

// SampleFiles is a small dune project with a library, an opam file and a test: what
// `kiln serve` builds out of the box.
func SampleFiles() map[string]string {
	return map[string]string{
		"hello.opam": `opam-version: "2.0"
synopsis: "Says hello"
maintainer: "dev@example.org"
authors: "dev@example.org"
license: "ISC"
homepage: "https://example.org/hello"
bug-reports: "https://example.org/hello/issues"
dev-repo: "git+https://example.org/hello.git"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} ]
build: [ ["dune" "build" "-p" name "-j" jobs] ["dune" "runtest" "-p" name] {with-test} ]
`,
		"dune-project":  "(lang dune 2.0)\n",
		"src/dune":      "(library (name hello))\n",
		"src/hello.ml":  "let greet name = \"Hello, \" ^ name\n",
		"src/hello.mli": "(** Greetings. *)\n\n(** [greet name] is a greeting for [name]. *)\nval greet : string -> string\n",
		"test/dune":     "(test (name test_hello) (libraries hello))\n",
		"test/test_hello.ml": `let () =
  let got = Hello.greet "world" in
  if got <> "Hello, world" then begin
    Printf.eprintf "Error: expected \"Hello, world\" but got %S\n" got;
    exit 1
  end;
  print_endline "test passed"
`,
	}
}

// CreateSample makes a git repository at dir holding SampleFiles on branch main,
// unless dir is a repository already.
func CreateSample(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		return nil
	}
	for rel, content := range SampleFiles() {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	w, err := git.Init(ctx, dir, "main")
	if err != nil {
		return fmt.Errorf("sample repository: %w", err)
	}
	if _, err := w.CommitAll(ctx, "A sample OCaml project"); err != nil {
		return fmt.Errorf("sample repository: %w", err)
	}
	return nil
}
