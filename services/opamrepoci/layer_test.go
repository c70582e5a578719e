package opamrepoci

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

func TestLayerRequest(t *testing.T) {
	r := newGitRepo(t)
	base := r.commit(baseRepo)
	r.run("checkout", "-q", "-b", "pr")
	head := r.commit(map[string]string{
		"lib.2":  `depends: ["ocaml" "alcotest" {with-test}]`,
		"mine.1": `depends: ["lib" {>= "1"}]`,
	})
	res, err := Analyse(context.Background(), r.gitDir(), base, head, nil)
	if err != nil {
		t.Fatal(err)
	}
	pl := &Planner{Config: Default()}
	archives, err := opamenv.NewArchives(t.TempDir(), opamenv.ArchivesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		job      string
		packages string
	}{
		{"lib.2,compilers,4.13,build", "lib.2 ocaml-system.4.13.1 ocaml.4.13.1"},
		{"lib.2,compilers,4.13,tests", "alcotest.1 lib.2 ocaml-system.4.13.1 ocaml.4.13.1"},
		{"mine.1,compilers,4.13,lower-bounds", "lib.1 lib.2 mine.1 ocaml-system.4.13.1 ocaml.4.13.1"},
		{"lib.2,compilers,4.13,revdeps,app.1", "alcotest.1 app.1 lib.2 ocaml-system.4.13.1 ocaml.4.13.1"},
	}
	for _, tc := range tests {
		t.Run(tc.job, func(t *testing.T) {
			j, err := pl.Config.ParseJob(tc.job)
			if err != nil {
				t.Fatal(err)
			}
			req, err := pl.LayerRequest(context.Background(), r.gitDir(), res, j)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range req.Packages {
				got = append(got, p.Package.String())
			}
			if strings.Join(got, " ") != tc.packages {
				t.Errorf("packages %v, want %s", got, tc.packages)
			}
			if req.Compiler != "ocaml-system.4.13.1" || !slices.Contains(req.Install, j.Package.String()) {
				t.Errorf("compiler %q, install %v", req.Compiler, req.Install)
			}
			ctxDir := t.TempDir()
			l, err := opamenv.Prepare(context.Background(), archives, ctxDir, req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(ctxDir, l.Dir, "repo", "packages", string(j.Package.Name), j.Package.String(), "opam")); err != nil {
				t.Errorf("the layer's repository lacks the package: %v", err)
			}
			sp, err := (&Specs{Config: pl.Config}).WithLayer(l).Spec(j)
			if err != nil {
				t.Fatal(err)
			}
			text := sp.String()
			for _, w := range []string{"opam switch create default ocaml-system.4.13.1", "opam pin add -k version -yn " + j.Package.String()} {
				if !strings.Contains(text, w) {
					t.Errorf("%q missing in\n%s", w, text)
				}
			}
			if strings.Contains(text, RepoDir) {
				t.Errorf("the spec copies the whole merged tree:\n%s", text)
			}
		})
	}
}

func TestSpecOverLayerNetwork(t *testing.T) {
	cfg := Default()
	j, err := cfg.ParseJob("lib.2,compilers,4.13,tests")
	if err != nil {
		t.Fatal(err)
	}
	layer := opamenv.Layer{Dir: opamenv.ContextDir + "/abc", Digest: "abc", Compiler: "ocaml-system.4.13.1", Install: []string{"lib.2"}}
	tests := []struct {
		name    string
		online  []string
		want    []string
		notWant []string
	}{
		{"every source in the layer", nil, []string{"opam reinstall --with-test --verbose lib.2"},
			[]string{"network", downloadCache.ID, "(opam reinstall --with-test lib.2) || true"}},
		{"a source the cache cannot keep", []string{"lib.2: git+https://example.org/lib.git"},
			[]string{"(network host)", "opam reinstall --with-test --verbose lib.2"}, []string{downloadCache.ID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := layer
			l.Online = tc.online
			sp, err := (&Specs{Config: cfg}).WithLayer(l).Spec(j)
			if err != nil {
				t.Fatal(err)
			}
			text := sp.String()
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("%q missing in\n%s", w, text)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(text, w) {
					t.Errorf("%q in\n%s", w, text)
				}
			}
		})
	}
}
