// Package nixtest gives tests a Nix runner on a store of their own, offline, a worker
// of the fleet running it, and a small OCaml project whose Nix expression builds with
// nothing but the host: busybox-static as the builder and the host's OCaml compiler
// shown to the sandbox.
package nixtest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// HostSandboxPaths show builders the host's /usr (OCaml, gcc and binutils, which
// ocamlopt calls through /bin/sh) on a Debian with merged /usr.
var HostSandboxPaths = []string{"/usr", "/bin=/usr/bin", "/lib=/usr/lib", "/lib64=/usr/lib64"}

// Require skips t (fails it under CI) unless it runs as root with Nix, busybox-static
// and the host's OCaml installed.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "nix-build", "nix-store", "nix", "busybox", "ocamlopt", "gcc")
}

// Options are a runner's options with its store below dir, no substituter (there is no
// network) and the host's /usr in the sandbox.
func Options(dir string) nixrun.Options {
	return nixrun.Options{
		WorkDir:      filepath.Join(dir, "work"),
		Store:        filepath.Join(dir, "store"),
		SandboxPaths: HostSandboxPaths,
		Settings:     map[string]string{"substituters": ""},
	}
}

// StartWorker runs worker name of pool with runner r on fleet f until the test ends.
func StartWorker(t testing.TB, f *cluster.Fleet, name, pool string, r cluster.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: f.URL, Name: name})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: name, Pool: pool, Capacity: 2,
		StateDir: t.TempDir(), Runner: r, HealthEvery: time.Hour, PruneEvery: time.Hour})
	if err != nil {
		cancel()
		nc.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
}

// Project is a small OCaml program printing greeting and its Nix expressions: the
// attribute hello of default.nix, and the flake output hello of flake.nix (a flake with
// no inputs, evaluated with --impure as it reads /usr/bin).
func Project(greeting string) map[string]string {
	return map[string]string{
		"hello.ml": fmt.Sprintf("let () = print_endline %q\n", greeting),
		"default.nix": `{ system ? builtins.currentSystem }:
let
  # busybox-static from the host, copied into the store: the builder's shell.
  busybox = builtins.path { path = /usr/bin; name = "busybox-static"; filter = p: t: baseNameOf p == "busybox"; };
  sh = "${busybox}/busybox";
in {
  hello = derivation {
    name = "hello-ocaml";
    inherit system;
    builder = sh;
    args = [ "sh" "-ec" ''
      export PATH=/usr/bin
      ${sh} mkdir -p $out/bin
      cp ${./hello.ml} hello.ml
      ocamlopt -o $out/bin/hello hello.ml
      $out/bin/hello
    '' ];
  };
}
`,
		"flake.nix": `{
  outputs = { self }: {
    packages.x86_64-linux.hello = (import ./default.nix { system = "x86_64-linux"; }).hello;
  };
}
`,
	}
}
