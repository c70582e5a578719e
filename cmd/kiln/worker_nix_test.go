package main

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
)

func TestNixRunnerFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		err  string // in the error; "" for none
	}{
		{name: "offline with the host's OCaml", args: []string{"--nix-option", "substituters=", "--nix-sandbox-path", "/usr", "--nix-sandbox-path", "/bin=/usr/bin", "--nix-min-free", "10G"}},
		{name: "defaults", args: nil},
		{name: "option without a value", args: []string{"--nix-option", "substituters"}, err: `--nix-option "substituters": want NAME=VALUE`},
		{name: "option without a name", args: []string{"--nix-option", "=x"}, err: "want NAME=VALUE"},
		{name: "bad free space", args: []string{"--nix-min-free", "ten"}, err: "--nix-min-free"},
		{name: "sandbox path with a blank", args: []string{"--nix-sandbox-path", "/a /b"}, err: "sandbox path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var n nixFlags
			fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
			n.add(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			r, err := n.runner(t.TempDir(), 0, prometheus.NewRegistry())
			switch {
			case c.err == "" && (err != nil || r == nil):
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			}
		})
	}
}
