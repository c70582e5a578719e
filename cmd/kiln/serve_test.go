package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestFlagValueNames checks that every flag's help shows a value type, not words of
// its description (pflag takes a `quoted` word of the usage as the value's name).
func TestFlagValueNames(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		t.Run(c.CommandPath(), func(t *testing.T) {
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " -") {
					t.Errorf("--%s shows %q as its value type", f.Name, name)
				}
			})
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(rootCmd)
}

func TestServeOnBusyAddresses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"NATS port in use", []string{"--nats-listen", busy.Addr().String(), "--listen", "127.0.0.1:0"},
			[]string{"--nats-listen " + busy.Addr().String(), "address already in use", "give it another address with --nats-listen"}},
		{"console port in use", []string{"--listen", busy.Addr().String(), "--nats-listen", "127.0.0.1:0"},
			[]string{"--listen " + busy.Addr().String(), "address already in use"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			cmd := serveCommand()
			cmd.SetArgs(append([]string{"--state-dir", state, "--no-arm64"}, c.args...))
			cmd.SetContext(context.Background())
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			err := cmd.Execute()
			if err == nil {
				t.Fatal("kiln serve started on a busy address")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(filepath.Join(state, "console", "admin.password")); err == nil {
				t.Error("an admin password was made (and printed) before the failure")
			}
		})
	}
}
