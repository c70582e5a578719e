package web

import (
	"strings"
	"testing"
)

func TestANSILine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain <b>&", "plain &lt;b&gt;&amp;"},
		{"\x1b[31mred\x1b[0m ok", `<span class="fc1">red</span> ok`},
		{"\x1b[1;32mbold green\x1b[m", `<span class="ab fc2">bold green</span>`},
		{"\x1b[38;5;196mx", `<span style="color:#ff0000">x</span>`},
		{"\x1b[48;2;1;2;3mx", `<span style="background-color:#010203">x</span>`},
		{"\x1b[91mbright", `<span class="fc9">bright</span>`},
		{"a\x1b[2Kb\x1b]0;title\x07c", "abc"},
		{"progress 10%\rprogress 100%", "progress 100%"},
		{"crlf\r", "crlf"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"bell\x07 tab\t", "bell tab\t"},
		{"\x1b[", ""},
		{"\x1b[38;5m", ""},
	}
	for _, c := range cases {
		var r ANSIRenderer
		if got := r.Line([]byte(c.in)); got != c.want {
			t.Errorf("Line(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestANSIStateCarriesOver(t *testing.T) {
	var r ANSIRenderer
	r.Line([]byte("\x1b[33mstart"))
	if got, want := r.Line([]byte("still")), `<span class="fc3">still</span>`; got != want {
		t.Fatalf("second line = %q, want %q", got, want)
	}
	r.Line([]byte("\x1b[0m"))
	if got := r.Line([]byte("plain")); got != "plain" {
		t.Fatalf("after reset = %q", got)
	}
}

func FuzzANSILine(f *testing.F) {
	for _, s := range []string{"\x1b[31mred", "\x1b[38;2;1;2;3mx\x1b[0m", "a\rb", "\x1b]8;;x\x1b\\y", "<script>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r ANSIRenderer
		out := r.Line(b)
		// No markup may come from the input: the only tags are our spans.
		rest := strings.NewReplacer("</span>", "", "<span", "").Replace(out)
		if strings.Contains(rest, "<") {
			t.Fatalf("unescaped < in %q", out)
		}
		if strings.Count(out, "<span") != strings.Count(out, "</span>") {
			t.Fatalf("unbalanced spans in %q", out)
		}
	})
}
