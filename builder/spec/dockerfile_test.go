package spec

import (
	"strings"
	"testing"
)

func TestDockerfileMultiStage(t *testing.T) {
	s := mustParseFile(t, "multistage.spec")
	got := s.Dockerfile(DockerfileOptions{BuildKit: true})
	for _, want := range []string{
		"FROM ocaml/opam@sha256:00f4d3f38bbde3a7a28b1b4b8994eded60fb5ee78822082f425662b7f9463178 AS dev\nSHELL [\"/bin/bash\", \"-c\"]\nWORKDIR /src\nUSER 1000:1000\n",
		"ENV OPAM_HASH=\"3a3d0c18daa25274d5ab6a2e343c99023b3b07aa\"\n",
		"RUN --network=host sudo apt-get --allow-releaseinfo-change update\n",
		"RUN --network=none sudo chown opam /src\n",
		"RUN --mount=type=cache,id=opam-archives,target=/home/opam/.opam/download-cache,uid=1000,gid=1000 --network=host opam depext -yu obuilder\n",
		"COPY --chown=1000:1000 obuilder-spec.opam obuilder.opam ./\n",
		"# excluded from the copy below (see .dockerignore): .git _build _opam\nCOPY --chown=1000:1000 . /src/\n",
		"\nFROM debian:11\nSHELL [\"/bin/bash\", \"-c\"]\n",
		"COPY --from=dev /src/_build/default/main.exe /usr/local/bin/obuilder\n",
		"RUN --mount=type=secret,id=password,target=/secrets/password --mount=type=secret,id=npm,target=/run/secrets/npm,mode=0400 --network=none test -f /secrets/password\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Dockerfile lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "AS dev") > strings.Index(got, "FROM debian:11") {
		t.Error("nested build must come first")
	}
	if ig := s.DockerIgnore(); !strings.Contains(ig, "**/_build\n") || !strings.Contains(ig, ".git\n") {
		t.Errorf("dockerignore = %q", ig)
	}
}

func TestDockerfileClassic(t *testing.T) {
	s := mustParseFile(t, "ocaml-ci-linux.spec")
	got := s.Dockerfile(DockerfileOptions{})
	if strings.Contains(got, "--mount") || strings.Contains(got, "--network") {
		t.Errorf("classic Dockerfile has BuildKit flags:\n%s", got)
	}
	for _, want := range []string{
		"# debian-11-4.14.0_opam-2.1\n",
		"USER 1000:1000\nENV CLICOLOR_FORCE=\"1\"\n",
		"RUN opam install $DEPS\n",
		"COPY --chown=1000:1000 . /src\n",
		// The multi-line command keeps its newlines exactly, in exec form.
		"RUN [\"/bin/bash\", \"-c\", \"opam exec -- dune build --only-packages=bondi @install @check @runtest;\\nres=$?;\\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Dockerfile lacks %q:\n%s", want, got)
		}
	}
}

func TestDockerfileShellAndQuoting(t *testing.T) {
	s, err := ParseString(`((from alpine) (comment "two\nlines") (shell /bin/sh -c) (env P "a \"b\" $HOME\\") (run (shell "echo a \\")) (run (shell "cat <<EOF")) (copy (src "a b") (dst /x)))`)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Dockerfile(DockerfileOptions{})
	want := classicNote + `FROM alpine
# two
# lines
SHELL ["/bin/sh", "-c"]
ENV P="a \"b\" \$HOME\\"
RUN ["/bin/sh", "-c", "echo a \\"]
RUN ["/bin/sh", "-c", "cat <<EOF"]
COPY ["a b", "/x"]
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
