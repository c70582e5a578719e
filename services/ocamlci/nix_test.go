package ocamlci

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/cluster/nixrun/nixtest"
	"github.com/kiln-ci/kiln/forge"
	"github.com/spf13/pflag"
)

func TestNixConfig(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want *NixConfig
		err  string // in the error; "" for none
	}{
		{name: "attribute", src: "nix: {attr: hello}\n", want: &NixConfig{Attr: "hello"}},
		{name: "file and attribute", src: "nix:\n  file: nix/ci.nix\n  attr: checks.build\n", want: &NixConfig{File: "nix/ci.nix", Attr: "checks.build"}},
		{name: "flake output", src: "nix: {flake: hello, impure: true}\n", want: &NixConfig{Flake: "hello", Impure: true}},
		{name: "none", src: "lint: {fmt: false}\n"},
		{name: "flake and attribute", src: "nix: {flake: hello, attr: hello}\n", err: "nix: nix job spec: flake"},
		{name: "not an attribute", src: "nix: {attr: 'a b'}\n", err: "field attr"},
		{name: "file outside the repository", src: "nix: {file: ../x.nix}\n", err: "field file"},
		{name: "misspelt key", src: "nix: {atr: hello}\n", err: "field atr not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(c.src))
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case (got.Nix == nil) != (c.want == nil) || got.Nix != nil && *got.Nix != *c.want:
				t.Fatalf("nix %+v, want %+v", got.Nix, c.want)
			}
		})
	}
}

func TestNixVariant(t *testing.T) {
	cases := []struct {
		name  string
		files []string
		nix   *NixConfig
		want  string // the variant's name; "" for none
		err   string
	}{
		{name: "attribute of default.nix", files: []string{"default.nix"}, nix: &NixConfig{Attr: "hello"}, want: "nix (hello)"},
		{name: "whole default.nix", files: []string{"default.nix"}, nix: &NixConfig{}, want: "nix (default.nix)"},
		{name: "attribute of another file", files: []string{"ci.nix"}, nix: &NixConfig{File: "ci.nix", Attr: "t"}, want: "nix (ci.nix t)"},
		{name: "flake output", files: []string{"flake.nix"}, nix: &NixConfig{Flake: "hello"}, want: "nix (flake hello)"},
		{name: "no nix section", files: []string{"default.nix"}},
		{name: "no default.nix", files: []string{"flake.nix"}, nix: &NixConfig{Attr: "hello"}, err: "nix: default.nix is not in the repository"},
		{name: "no flake.nix", files: []string{"default.nix"}, nix: &NixConfig{Flake: "hello"}, err: "nix: flake.nix is not in the repository"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range c.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("{}\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			v, err := nixVariant(dir, &Analysis{Config: Config{Nix: c.nix}}, "linux-x86_64-nix")
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case c.want == "" && v != nil:
				t.Fatalf("variant %+v, want none", v)
			case c.want != "" && (v == nil || v.Name != c.want || v.Kind != KindNix || v.Platform.Pool != "linux-x86_64-nix" || *v.Nix != c.nix.spec()):
				t.Fatalf("variant %+v, want %s on linux-x86_64-nix", v, c.want)
			}
		})
	}
}

// TestNixJob checks the fleet job of a Nix variant, and that a server without Nix
// builders says so instead of submitting one.
func TestNixJob(t *testing.T) {
	v := Variant{Name: "nix (hello)", Kind: KindNix, Nix: &nixrun.Spec{Attr: "hello"}}
	co := Checkout{Repo: forge.RepoID{Forge: "git", Owner: "o", Name: "r"}, Commit: "c"}
	cases := []struct {
		name                  string
		pool                  string
		spec, specError, hint string
	}{
		{name: "nix pool", pool: "linux-x86_64-nix", spec: `{"attr":"hello"}`, hint: "nix git/o/r default.nix -A hello"},
		{name: "no nix pool", specError: "this server has no Nix builders"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{NixPool: c.pool}
			spec, specError, hint := s.nixJob(co, v)
			if spec != c.spec || !strings.Contains(specError, c.specError) || (c.specError == "") != (specError == "") || hint != c.hint {
				t.Errorf("spec %q, error %q, hint %q; want %q, %q, %q", spec, specError, hint, c.spec, c.specError, c.hint)
			}
		})
	}
}

// TestNixVariantOnTheFleet follows a repository packaged with Nix: its Nix variant
// builds, offline, the OCaml program with the host's compiler and busybox-static as
// the builder on a Nix worker of the fleet, and a broken expression fails the commit
// with Nix's error lines in its status.
func TestNixVariantOnTheFleet(t *testing.T) {
	nixtest.Require(t)
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const pool = "linux-x86_64-nix"
	r, err := nixrun.New(nixtest.Options(filepath.Join(state, "nix")))
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(state, "fleet"), Listen: "127.0.0.1:0", Pools: []string{pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	nixtest.StartWorker(t, fleet, "nix-1", pool, r)

	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	files := nixtest.Project("Hello from Nix")
	files[ConfigFile] = "nix: {attr: hello}\n"
	good := commitTree(t, repoDir, "main", files, "hello")

	h := runCI(t, ctx, fleet, repoDir, t.TempDir(), 0, func(svc *Service) { svc.NixPool = pool })
	c := h.waitCommit(good, 5*time.Minute)
	vs, _ := h.svc.Index.Variants(context.Background(), h.repo, good)
	if c.State != forge.Passed || len(vs) != 1 || vs[0].Name != "nix (hello)" || vs[0].State != forge.Passed {
		t.Fatalf("good commit: %s (%s), variants %+v\n%s", c.State, c.Title, vs, c.Summary)
	}
	if l := readJobLog(t, h.engine, vs[0].JobID); !strings.Contains(l, "Hello from Nix\n") || !strings.Contains(l, "a closure of 1 store paths") {
		t.Errorf("the build's log lacks the program's run or its closure:\n%s", l)
	}

	files["default.nix"] = strings.Replace(files["default.nix"], "inherit system;", "inherit sytem;", 1)
	bad := commitTree(t, repoDir, "main", files, "typo")
	h.src.Refresh()
	c = h.waitCommit(bad, 5*time.Minute)
	if c.State != forge.Failed {
		t.Fatalf("broken expression: %s (%s)\n%s", c.State, c.Title, c.Summary)
	}
	for _, want := range []string{"error: undefined variable 'sytem'", "at default.nix:7:23:", "7|   hello = derivation {"} {
		if !strings.Contains(c.Summary, want) {
			t.Errorf("status lacks %q:\n%s", want, c.Summary)
		}
	}
}

func TestNixPoolFlag(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{name: "nix pool", args: []string{"--nix-pool", "linux-x86_64-nix"}, want: "linux-x86_64-nix"},
		{name: "none", args: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			svc := ServiceKind.Flags(fs).(*served)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if svc.nixPool != c.want {
				t.Errorf("nix pool %q, want %q", svc.nixPool, c.want)
			}
			if slices.Contains(svc.Pools(), svc.nixPool) {
				t.Errorf("pools %v include the Nix pool: the host's local builder workers would join it", svc.Pools())
			}
		})
	}
}
