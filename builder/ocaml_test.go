package builder_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// ocamlSpec installs ocaml-nox from the Debian mirror, compiles a program and runs it.
func ocamlSpec(base string) string {
	return `((from ` + base + `)
 (run (network host)
      (cache (apt-archives (target /var/cache/apt/archives)))
      (shell "mkdir -p /var/cache/apt/archives/partial && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ocaml-nox"))
 (run (shell "useradd -m -u 1000 builder"))
 (user (uid 1000) (gid 1000))
 (workdir /home/builder/src)
 (copy (src hello.ml) (dst ./))
 (run (shell "ocamlopt -o hello hello.ml && echo compiled $(date +%s%N)"))
 (copy (src greeting.txt) (dst ./))
 (run (shell "./hello < greeting.txt")))`
}

func ocamlContext(t testing.TB) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.ml"), []byte(`let () = Printf.printf "Hello, %s!\n" (String.trim (input_line stdin))`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "greeting.txt"), []byte("world\n"), 0o644)
	return dir
}

func TestOCamlProgram(t *testing.T) {
	testenv.Short(t, "installs ocaml-nox from the Debian mirror")
	b, base := newBuilder(t, builder.Options{})
	ctx := ocamlContext(t)
	s := parse(t, ocamlSpec(base))
	id1, log1 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if !strings.Contains(log1, "Hello, world!") {
		t.Fatalf("the OCaml program did not print its greeting:\n%s", log1)
	}
	if !strings.Contains(log1, "FROM "+base) {
		t.Errorf("log does not start with the Dockerfile:\n%s", log1)
	}

	before := b.Stats()
	id2, log2 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if st := b.Stats(); st.Run != before.Run || id2 != id1 {
		t.Errorf("second build: %d steps ran (want 0), id %s (want %s)", st.Run-before.Run, id2, id1)
	}
	if outputOf(log2, "compiled") != outputOf(log1, "compiled") || !strings.Contains(log2, "Hello, world!") {
		t.Errorf("cached build did not replay the logs:\n%s", log2)
	}

	os.WriteFile(filepath.Join(ctx, "greeting.txt"), []byte("kiln\n"), 0o644)
	before = b.Stats()
	_, log3 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if got := b.Stats().Run - before.Run; got != 2 {
		t.Errorf("after changing greeting.txt %d steps ran, want 2 (its copy and the run after it)", got)
	}
	if outputOf(log3, "compiled") != outputOf(log1, "compiled") {
		t.Error("the compile step before the changed file ran again")
	}
	if !strings.Contains(log3, "Hello, kiln!") {
		t.Errorf("the program did not see the new file:\n%s", log3)
	}
}
