package fleetjob

import (
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
			"compiling|File \"a.ml\", line 3:|Error: Unbound value x"},
		{"no error lines: the tail", []string{"a", "b"}, "a|b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := strings.Join(FailingLines(c.log), "|"); got != c.want {
				t.Errorf("FailingLines = %q, want %q", got, c.want)
			}
		})
	}
}

func TestTailWriterKeepsLastLinesWithoutColours(t *testing.T) {
	tw := &tailWriter{max: 3}
	tw.Write([]byte("one\ntw"))
	tw.Write([]byte("o\n\x1b[31mthree\x1b[0m\nfour\nfive"))
	if got := strings.Join(tw.lines(), "|"); got != "three|four|five" {
		t.Errorf("tail = %q", got)
	}
}
