package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/host"
)

func TestStart(t *testing.T) {
	remote := t.TempDir()
	hookFile := filepath.Join(t.TempDir(), "hook")
	os.WriteFile(hookFile, []byte("http://127.0.0.1:9/hook\n"), 0o600)
	cases := []struct {
		name     string
		args     []string
		git      bool // a repository followed
		errSub   string
		pipeline bool
	}{
		{"API and pages only without forges", nil, false, "", false},
		{"a pipeline on the forges followed", []string{"--bench-runner", "host"}, true, "", true},
		{"unknown runner", []string{"--bench-runner", "cloud"}, true, "want fleet, sandbox, host or auto", false},
		{"the fleet runner needs a fleet", []string{"--bench-runner", "fleet"}, true, "the server has no fleet", false},
		{"alerts to a webhook", []string{"--bench-runner", "host", "--bench-alert", "json=" + hookFile}, true, "", true},
		{"an alert without its kind", []string{"--bench-runner", "host", "--bench-alert", hookFile}, true, "want KIND=FILE", false},
		{"an alert whose URL file is missing", []string{"--bench-runner", "host", "--bench-alert", "slack=/nonexistent"}, true, "--bench-alert", false},
		{"a database that cannot be opened", []string{"--bench-db", "/nonexistent/dir/bench.db"}, false, "bench store", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			svc := ServiceKind.Flags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			set := &forges.Set{}
			if c.git {
				set.Add("git", &forges.Git{Repos: []forges.GitRepo{{Owner: "local", Name: "lib", Remote: remote}}})
			}
			env := &host.Env{StateDir: t.TempDir(), Forges: set, Logger: quiet, Register: prometheus.NewRegistry()}
			r, err := svc.Start(context.Background(), env)
			if c.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), c.errSub) {
					t.Fatalf("err %v, want one containing %q", err, c.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, ok := r.Routes[Prefix+"/"]; !ok {
				t.Errorf("routes %v without the pages", r.Routes)
			}
			if _, ok := set.Routes()["POST "+APIPath]; !ok {
				t.Errorf("the submit API is not beside the forges' webhooks: %v", set.Routes())
			}
			if got := r.Pipeline != (current.Term[current.Unit]{}); got != c.pipeline {
				t.Errorf("pipeline %v, want %v", got, c.pipeline)
			}
		})
	}
}

func TestPools(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--bench-runner", "fleet"}, "bench"},
		{[]string{"--bench-runner", "fleet", "--bench-pool", "bench-a", "--bench-pool", "bench-b"}, "bench-a bench-b"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			svc := ServiceKind.Flags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(host.Pools([]host.Service{svc}), " "); got != c.want {
				t.Errorf("pools %q, want %q", got, c.want)
			}
		})
	}
}
