package nixrun

import (
	"strings"
	"testing"
)

// Outputs recorded from Nix 2.8.0 (nix-instantiate, nix-store --realise).
var (
	syntaxError = []string{
		"error: syntax error, unexpected ';'",
		"",
		"       at /src/default.nix:1:10:",
		"",
		"            1| { x = 1 +; }",
		"             |          ^",
		"(use '--show-trace' to show detailed location information)",
	}
	builderError = []string{
		"this derivation will be built:",
		"  /nix/store/knn3b84wlzf6667d8dl7wwxhv3vcgan6-broken.drv",
		"building '/nix/store/knn3b84wlzf6667d8dl7wwxhv3vcgan6-broken.drv'...",
		"compiling",
		`File "x.ml", line 1:`,
		"Error: boom",
		"error: builder for '/nix/store/knn3b84wlzf6667d8dl7wwxhv3vcgan6-broken.drv' failed with exit code 3",
	}
	downloadError = []string{
		"building '/nix/store/abc-source.drv'...",
		"error: unable to download 'https://example.org/x.tar.gz': Couldn't resolve host name (6)",
		"error: builder for '/nix/store/abc-source.drv' failed with exit code 1",
	}
)

func TestFailureLines(t *testing.T) {
	cases := []struct {
		name  string
		f     *Failure
		lines []string
		msg   string
	}{
		{name: "syntax error keeps the code pointed at", f: evaluationFailure(syntaxError),
			lines: syntaxError[:6], msg: "nix evaluation failed: syntax error, unexpected ';'"},
		{name: "evaluation error after warnings", f: evaluationFailure([]string{"warning: Git tree '/src' is dirty", "error: attribute 'nope' in selection path 'nope' not found"}),
			lines: []string{"error: attribute 'nope' in selection path 'nope' not found"}, msg: "nix evaluation failed: attribute 'nope'"},
		{name: "build failure keeps the builder's output", f: buildFailure(builderError),
			lines: builderError[3:], msg: "nix build failed: builder for '/nix/store/knn3b84wlzf6667d8dl7wwxhv3vcgan6-broken.drv' failed with exit code 3"},
		{name: "build failure of nix build -L", f: buildFailure([]string{"building '/nix/store/x.drv'...", "hello-ocaml> Error: boom", "error: builder for '/nix/store/x.drv' failed with exit code 2;"}),
			lines: []string{"Error: boom", "error: builder for '/nix/store/x.drv' failed with exit code 2;"}, msg: "nix build failed: builder for"},
		{name: "build failure keeps the builder's last lines", f: buildFailure(append(make([]string, 0), strings.Split(strings.Repeat("line\n", 40)+"error: builder for 'x' failed with exit code 1", "\n")...)),
			lines: append(strings.Split(strings.TrimSuffix(strings.Repeat("line\n", builderTail), "\n"), "\n"), "error: builder for 'x' failed with exit code 1"), msg: "nix build failed: builder for 'x'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if strings.Join(c.f.Lines, "\n") != strings.Join(c.lines, "\n") {
				t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(c.f.Lines, "\n"), strings.Join(c.lines, "\n"))
			}
			if !strings.Contains(c.f.Error(), c.msg) {
				t.Errorf("message %q lacks %q", c.f.Error(), c.msg)
			}
		})
	}
}

func TestInfrastructureLines(t *testing.T) {
	cases := []struct {
		name    string
		lines   []string
		infra   string // the line naming the machine's fault; "" for the project's failure
		builder bool
	}{
		{name: "builder failure", lines: builderError, builder: true},
		{name: "evaluation error", lines: syntaxError},
		{name: "download failed", lines: downloadError, infra: downloadError[1], builder: true},
		{name: "damaged database", lines: []string{"error: executing SQLite statement 'pragma synchronous = normal': file is not a database (in '/s/nix/var/nix/db/db.sqlite')"},
			infra: "error: executing SQLite statement 'pragma synchronous = normal': file is not a database (in '/s/nix/var/nix/db/db.sqlite')"},
		{name: "no daemon", lines: []string{"error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused"},
			infra: "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused"},
		{name: "no store access", lines: []string{"error: creating directory '/nix/store': Permission denied"}, infra: "error: creating directory '/nix/store': Permission denied"},
		{name: "missing sandbox path", lines: []string{"error: getting attributes of path '/opt/x': No such file or directory"}, infra: "error: getting attributes of path '/opt/x': No such file or directory"},
		{name: "builder prints permission denied", lines: []string{"cp: can't create '/usr/x': Permission denied", "error: builder for 'x' failed with exit code 1"}, builder: true},
		{name: "wrong fixed-output hash", lines: []string{"error: hash mismatch in fixed-output derivation '/nix/store/x.drv':"}, builder: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := infrastructure(c.lines); got != c.infra {
				t.Errorf("infrastructure: %q, want %q", got, c.infra)
			}
			if got := builderFault(c.lines); got != c.builder {
				t.Errorf("builder fault: %v, want %v", got, c.builder)
			}
		})
	}
}

func TestGCReport(t *testing.T) {
	cases := []struct {
		name  string
		out   string
		paths int
		freed int64
	}{
		{name: "some", out: "finding garbage collector roots...\ndeleting '/nix/store/x'\n4 store paths deleted, 2.27 MiB freed\n", paths: 4, freed: 2380267},
		{name: "none", out: "finding garbage collector roots...\n0 store paths deleted, 0.00 MiB freed\n"},
		{name: "unknown", out: "something else"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if p, f := gcReport(c.out); p != c.paths || f != c.freed {
				t.Errorf("%d paths, %d bytes; want %d, %d", p, f, c.paths, c.freed)
			}
		})
	}
}

func TestLineTail(t *testing.T) {
	cases := []struct {
		name   string
		writes []string
		max    int
		want   []string
	}{
		{name: "split writes", writes: []string{"a\nb", "c\n", "d"}, max: 10, want: []string{"a", "bc", "d"}},
		{name: "last lines only", writes: []string{"1\n2\n3\n4\n5\n"}, max: 2, want: []string{"4", "5"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lt := &lineTail{max: c.max}
			for _, w := range c.writes {
				lt.Write([]byte(w))
			}
			if got := lt.lines(); strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Errorf("%q, want %q", got, c.want)
			}
		})
	}
}

// FuzzFailureLines checks that any output of Nix gives a failure of at most maxLines
// lines, each one of the output's (less a builder's name prefix), and no panic.
func FuzzFailureLines(f *testing.F) {
	for _, lines := range [][]string{syntaxError, builderError, downloadError} {
		f.Add(strings.Join(lines, "\n"))
	}
	f.Fuzz(func(t *testing.T, out string) {
		lines := strings.Split(out, "\n")
		infrastructure(lines)
		builderFault(lines)
		for _, fl := range []*Failure{evaluationFailure(lines), buildFailure(lines)} {
			if len(fl.Lines) > maxLines {
				t.Fatalf("%s failure of %d lines", fl.Kind, len(fl.Lines))
			}
			for _, l := range fl.Lines {
				if !strings.Contains(out, l) {
					t.Fatalf("%s failure line %q is not in the output", fl.Kind, l)
				}
			}
			_ = fl.Error()
		}
	})
}
