package ocamlci

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// TestLintOpamFitsProjects checks the (lint-opam) variant's findings on projects'
// own opam files: only the rules that fit a project, each finding once.
func TestLintOpamFitsProjects(t *testing.T) {
	sexplib0, err := os.ReadFile("../../opam/lint/testdata/project/sexplib0.v0.15.1.opam")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		// `opam lint sexplib0.opam` at v0.15.1 says Passed.
		{"sexplib0 v0.15.1", map[string]string{"sexplib0.opam": string(sexplib0), "dune-project": "(lang dune 2.0)\n"}, nil},
		{"sexplib0 v0.15.1 as a root opam file", map[string]string{"opam": string(sexplib0), "dune-project": "(lang dune 2.0)\n"}, nil},
		{"a problem in two files, once each", map[string]string{
			"a.opam": strings.Replace(string(sexplib0), "maintainer:", "x-maintainer:", 1),
			"b.opam": strings.Replace(string(sexplib0), "maintainer:", "x-maintainer:", 1),
		}, []string{"a.opam: error opam-23: Missing field 'maintainer'", "b.opam: error opam-23: Missing field 'maintainer'"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{Platforms: matrix.Default()[:1]}
			plan, err := s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: writeTree(t, c.files)}}, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range plan.Findings {
				got = append(got, f.String())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}
