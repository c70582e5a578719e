package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		ok     bool
		errSub string
		check  func(Config) bool
	}{
		{name: "no file", in: "", ok: false},
		{name: "other sections only", in: "platforms:\n  skip: [alpine]\n", ok: false},
		{name: "bench alone takes the defaults", in: "bench:\n", ok: true, check: func(c Config) bool {
			return c.Command == "make bench" && c.Branches[0] == "main" && c.PullRequests == PRAlways && c.Pool == "bench" &&
				c.Repeats == 5 && time.Duration(c.Timeout) == time.Hour
		}},
		{name: "everything set", in: `platforms:
  skip: [alpine]
bench:
  command: dune exec bench/main.exe
  branches: [main, release]
  pull-requests: label
  schedule: 24h
  env: {OCAMLRUNPARAM: "s=4M"}
  pool: bench-x86
  repeats: 10
  timeout: 20m
`, ok: true, check: func(c Config) bool {
			return c.Command == "dune exec bench/main.exe" && c.OnBranch("release") && c.Label == "benchmark" &&
				c.Wants([]string{"benchmark"}) && !c.Wants(nil) && c.Schedule.Spec == "@every 24h0m0s" &&
				c.Env["OCAMLRUNPARAM"] == "s=4M" && c.Repeats == 10 && time.Duration(c.Timeout) == 20*time.Minute
		}},
		{name: "unknown setting names its line", in: "bench:\n  command: x\n  repeat: 3\n", errSub: ".kiln.yml:3: bench: unknown setting \"repeat\""},
		{name: "bad policy", in: "bench:\n  pull-requests: sometimes\n", errSub: "not always, label or never"},
		{name: "too many repeats", in: "bench:\n  repeats: 500\n", errSub: "not 1 to 50"},
		{name: "bad duration", in: "bench:\n  timeout: soon\n", errSub: "not a duration"},
		{name: "schedule too often", in: "bench:\n  schedule: 5m\n", errSub: "at least 1h"},
		{name: "cron schedule", in: "bench:\n  schedule: \"30 3 * * 1-5\"\n", ok: true, check: func(c Config) bool {
			return c.Schedule.Next(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)).Equal(time.Date(2026, 12, 7, 3, 30, 0, 0, time.UTC))
		}},
		{name: "cron descriptor", in: "bench:\n  schedule: \"@daily\"\n", ok: true, check: func(c Config) bool {
			return c.Schedule.Next(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)).Equal(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
		}},
		{name: "cron schedule too often", in: "bench:\n  schedule: \"*/10 * * * *\"\n", errSub: "at least 1h apart"},
		{name: "neither duration nor cron", in: "bench:\n  schedule: nightly\n", errSub: "neither a duration"},
		{name: "no schedule", in: "bench:\n", ok: true, check: func(c Config) bool { return c.Schedule.Next(time.Now()).IsZero() }},
		{name: "bad env name", in: "bench:\n  env: {\"A B\": x}\n", errSub: "not a variable name"},
		{name: "not a mapping", in: "bench: [1]\n", errSub: "not a mapping"},
		{name: "malformed YAML", in: "bench:\n  command: [\n", errSub: "bench:"},
		{name: "never", in: "bench:\n  pull-requests: never\n", ok: true, check: func(c Config) bool { return !c.Wants([]string{"benchmark"}) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, ok, err := ParseConfig([]byte(c.in))
			if c.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), c.errSub) {
					t.Fatalf("err %v, want one containing %q", err, c.errSub)
				}
				return
			}
			if err != nil || ok != c.ok {
				t.Fatalf("ok %v err %v, want ok %v", ok, err, c.ok)
			}
			if c.check != nil && !c.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("bench:\n  command: make bench\n  repeats: 3\n")
	f.Add("bench:\n  env: {A: b}\n  schedule: 24h\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, ok, err := ParseConfig([]byte(in))
		if err != nil || !ok {
			return
		}
		if c.Command == "" || len(c.Branches) == 0 || c.Repeats < 1 || c.Repeats > 50 || c.Pool == "" {
			t.Fatalf("accepted config without its defaults: %+v", c)
		}
	})
}
