package forge

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSummarise(t *testing.T) {
	vs := []Variant{
		{Name: "debian-13-5.3_amd64", State: Failed, Message: "build failed", FailingLines: []string{"Error: Unbound value x"}},
		{Name: "debian-13-5.3_arm64", State: Failed, Experimental: true},
		{Name: "(lint-fmt)", State: Passed},
		{Name: "alpine|x", State: Running},
	}
	st := Summarise(vs)
	if st.State != Failed || st.Title != "2 failed, 1 running, 1 passed" {
		t.Fatalf("status = %+v", st)
	}
	for _, want := range []string{"| debian-13-5.3_arm64 | failed (experimental) |", "### debian-13-5.3_amd64\nbuild failed\n\n```\nError: Unbound value x\n```", `alpine\|x`} {
		if !strings.Contains(st.Summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, st.Summary)
		}
	}
	if Summarise(vs[1:]).State != Running {
		t.Error("an experimental failure failed the commit")
	}
	if Summarise([]Variant{{State: Passed}, {State: Error}}).State != Error {
		t.Error("an infrastructure error was not reported")
	}
	if got := Summarise([]Variant{{State: Passed}, {State: Cancelled}}).State; got != Cancelled {
		t.Errorf("a superseded commit is %s, want cancelled", got)
	}
	if got := Summarise([]Variant{{State: Running}, {State: Cancelled}}).State; got != Running {
		t.Errorf("a commit with a running variant is %s, want running", got)
	}
	if s := Summarise([]Variant{{Name: "v", State: Queued, Message: "waiting for the base image x"}}).Summary; !strings.Contains(s, "| v | queued: waiting for the base image x |") {
		t.Errorf("a queued variant's row does not say why it waits:\n%s", s)
	}
	if Summarise(nil).State != Queued {
		t.Error("no variants is not queued")
	}
	d := st.Short(vs, 60)
	if len(d) > 60 || !strings.HasPrefix(d, "2 failed") || !utf8.ValidString(d) {
		t.Errorf("Short = %q", d)
	}
	long := make([]Variant, 0, 3000)
	for range 3000 {
		long = append(long, Variant{Name: strings.Repeat("v", 30), State: Failed, FailingLines: []string{strings.Repeat("e", 50)}})
	}
	if s := Summarise(long).Summary; len(s) > 61000 || strings.Count(s, "```")%2 != 0 {
		t.Errorf("long summary: %d bytes, %d fences", len(s), strings.Count(s, "```"))
	}
}

func TestShortNamesTheFailingLines(t *testing.T) {
	cases := []struct {
		name    string
		variant Variant
		want    string
	}{
		{"a test's diff", Variant{Name: "debian-12-4.13_amd64", State: Failed, Message: "/src: (run …): command failed with exit status 1",
			FailingLines: []string{`File "test/cond.ref", line 1, characters 0-0:`, " apple", "-bananas", "+banana", " cherry"}},
			`1 failed; debian-12-4.13_amd64: File "test/cond.ref", line 1, characters 0-0: / apple / -bananas / +banana / cherry`},
		{"a compiler error without its carets", Variant{Name: "v", State: Failed,
			FailingLines: []string{`File "a.ml", line 2, characters 4-5:`, "2 | let x = y", "        ^", "Error: Unbound value y"}},
			`1 failed; v: File "a.ml", line 2, characters 4-5: / 2 | let x = y / Error: Unbound value y`},
		{"no lines: the message", Variant{Name: "v", State: Error, Message: "worker lost"}, "1 error; v: worker lost"},
		{"superseded", Variant{Name: "v", State: Cancelled, Message: "cancelled: superseded"}, "1 cancelled; cancelled: superseded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := []Variant{c.variant}
			if got := Summarise(vs).Short(vs, 255); got != c.want {
				t.Errorf("Short = %q, want %q", got, c.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{{"hello", 10, "hello"}, {"hello world", 8, "hello…"}, {"ééééé", 6, "é…"}, {"abc", 2, ""}} {
		if got := Truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
