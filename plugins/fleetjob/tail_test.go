package fleetjob

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFailingLines(t *testing.T) {
	cases := []struct {
		name string
		log  []string
		want string
	}{
		{"error and its context", []string{"step 1", "compiling", "File \"a.ml\", line 3:", "Error: Unbound value x", "ok", "more"},
			"File \"a.ml\", line 3:|Error: Unbound value x"},
		{"no error lines: the tail", []string{"a", "b"}, "a|b"},
		{"no error lines: the tail without kiln's trailer",
			[]string{"a", "/src: (run (shell \"make\")): command failed with exit status 2", "--- failed: /src: (run (shell \"make\")): command failed with exit status 2 ---"}, "a"},
		{"loose error lines once", []string{"make: *** [all] Error 2", "x", "make: *** [all] Error 2"}, "make: *** [all] Error 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := strings.Join(FailingLines(c.log), "|"); got != c.want {
				t.Errorf("FailingLines = %q, want %q", got, c.want)
			}
		})
	}
}

// TestFailingLinesOfRealLogs reads logs of real builds (testdata/excerpts, see its
// README) and checks the excerpt of each.
func TestFailingLinesOfRealLogs(t *testing.T) {
	cases := []struct {
		log  string
		want []string
	}{
		{"dune-type-error-and-diff.log", []string{
			`File "src/p1.ml", line 2, characters 32-37:`,
			`2 | let count xs = List.length xs + "one"`,
			`                                    ^^^^^`,
			`Error: This expression has type string but an expression was expected of type`,
			`         int`,
			`File "test/cond.ref", line 1, characters 0-0:`,
			` apple`,
			`-bananas`,
			`+banana`,
			` cherry`,
		}},
		{"dune-warning-and-test-exception.log", []string{
			`File "src/p2.ml", line 2, characters 14-15:`,
			`2 | let f x = let y = x in 1`,
			`                  ^`,
			`Error (warning 26 [unused-var]): unused variable y.`,
			`test_p2 alias test/runtest (exit 2)`,
			`Fatal error: exception Assert_failure("test/test_p2.ml", 2, 9)`,
		}},
		{"opam-install-compile-error.log", []string{
			`File "p3.ml", line 1, characters 9-16:`,
			`1 | let () = Foo.run ()`,
			`             ^^^^^^^`,
			`Error: Unbound module Foo`,
			`[ERROR] The compilation of p3.dev failed at "ocamlc -c p3.ml".`,
			`#=== ERROR while compiling p3.dev`,
		}},
		{"opam-not-initialised.log", []string{
			"[ERROR] Opam has not been initialised, please run `opam init'",
		}},
	}
	for _, c := range cases {
		t.Run(strings.TrimSuffix(c.log, ".log"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "excerpts", c.log))
			if err != nil {
				t.Fatal(err)
			}
			got := FailingLines(strings.Split(strings.TrimRight(string(data), "\n"), "\n"))
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("FailingLines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			for _, l := range got {
				if ownLine(l) || strings.Contains(l, "command failed with exit status") {
					t.Errorf("kiln's own line in the excerpt: %q", l)
				}
			}
		})
	}
}

func FuzzFailingLines(f *testing.F) {
	for _, name := range []string{"dune-type-error-and-diff.log", "opam-install-compile-error.log"} {
		data, err := os.ReadFile(filepath.Join("testdata", "excerpts", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, log string) {
		got := FailingLines(strings.Split(log, "\n"))
		if len(got) > maxFailingLines {
			t.Fatalf("%d lines, want at most %d", len(got), maxFailingLines)
		}
		for _, l := range got {
			if ownLine(l) {
				t.Fatalf("kiln's own line in the excerpt: %q", l)
			}
		}
	})
}

func TestTailWriterKeepsLastLinesWithoutColours(t *testing.T) {
	tw := &tailWriter{max: 3}
	tw.Write([]byte("one\ntw"))
	tw.Write([]byte("o\n\x1b[31mthree\x1b[0m\nfour\nfive"))
	if got := strings.Join(tw.lines(), "|"); got != "three|four|five" {
		t.Errorf("tail = %q", got)
	}
}
