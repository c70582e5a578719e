package healthcheck

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kiln-ci/kiln/opam/repository"
)

func loadRepo(t *testing.T, files map[string]string) *repository.Repo {
	t.Helper()
	dir := t.TempDir()
	for p, data := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := repository.LoadDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPlan(t *testing.T) {
	repo := loadRepo(t, map[string]string{
		"repo":                        "opam-version: \"2.0\"\n",
		"packages/comp/comp.1/opam":   fakePkg(`"ocaml" {post} "base" {post}`, ""),
		"packages/base/base.1/opam":   fakePkg("", ""),
		"packages/ocaml/ocaml.1/opam": fakePkg(`"comp"`, ""),
		"packages/lib/lib.1/opam":     fakePkg(`"ocaml"`, ""),
		"packages/lib/lib.2/opam":     fakePkg(`"ocaml"`, ""),
		"packages/x/x.1/opam":         fakePkg(`"ocaml"`, ""),
		"packages/a/a.1/opam":         fakePkg(`"lib"`, ""),
		"packages/b/b.1/opam":         fakePkg(`"lib" "x"`, ""),
		"packages/nosol/nosol.1/opam": fakePkg(`"lib" {>= "3"}`, ""),
	})
	cfg := &Config{Switches: []Switch{{Name: "s", Compiler: "comp.1"}}}
	if err := (&Config{Repository: RepositoryConfig{URL: "x"}, Switches: cfg.Switches}).Check(); err != nil {
		t.Fatal(err)
	}
	cfg.Platform.Name = "debian-12-4.13_amd64"
	for _, c := range []struct {
		name string
		all  bool
		jobs map[string]Job
		na   []string
	}{
		{"latest", false, map[string]Job{
			"a.1":    {Switch: "s", Package: "a.1", Deps: [][]string{{"base.1"}, {"comp.1", "ocaml.1"}, {"lib.2"}}},
			"b.1":    {Switch: "s", Package: "b.1", Deps: [][]string{{"base.1"}, {"comp.1", "ocaml.1"}, {"lib.2"}, {"x.1"}}},
			"comp.1": {Switch: "s", Package: "comp.1", Deps: [][]string{{"base.1"}}, With: []string{"ocaml.1"}},
			"lib.2":  {Switch: "s", Package: "lib.2", Deps: [][]string{{"base.1"}, {"comp.1", "ocaml.1"}}},
			// the compiler depends on base: it is installed in base's step
			"base.1": {Switch: "s", Package: "base.1", With: []string{"comp.1", "ocaml.1"}},
		}, []string{"nosol.1"}},
		{"all versions", true, map[string]Job{
			"lib.1": {Switch: "s", Package: "lib.1", Deps: [][]string{{"base.1"}, {"comp.1", "ocaml.1"}}},
		}, []string{"nosol.1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := (&Planner{Config: cfg}).Plan(context.Background(), 7, repo, Select(repo, c.all))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Job{}
			for _, j := range p.Jobs {
				got[j.Package] = j
			}
			for pkg, want := range c.jobs {
				if !reflect.DeepEqual(got[pkg], want) {
					t.Errorf("%s: %+v, want %+v", pkg, got[pkg], want)
				}
			}
			var na []string
			for _, r := range p.Results {
				if r.Run != 7 {
					t.Errorf("%s: run %d", r.Package, r.Run)
				}
				if r.State == NotAvailable {
					na = append(na, r.Package)
				}
			}
			if !reflect.DeepEqual(na, c.na) {
				t.Errorf("not available: %v, want %v", na, c.na)
			}
			if len(p.Results) != len(p.Jobs)+len(na) {
				t.Errorf("%d results for %d jobs and %d not available", len(p.Results), len(p.Jobs), len(na))
			}
		})
	}
	t.Run("restricted", func(t *testing.T) {
		p, err := (&Planner{Config: cfg, Changed: []string{"x.1"}}).Plan(context.Background(), 1, repo, Select(repo, false))
		if err != nil {
			t.Fatal(err)
		}
		var pkgs []string
		for _, r := range p.Results {
			pkgs = append(pkgs, r.Package)
		}
		if !reflect.DeepEqual(pkgs, []string{"b.1", "x.1"}) {
			t.Errorf("a change of x plans %v, want x and b", pkgs)
		}
	})
}
