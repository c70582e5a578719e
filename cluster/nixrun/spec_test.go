package nixrun

import (
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	cases := []struct {
		name string
		text string
		want Spec
		err  string // in the error; "" for none
	}{
		{name: "attribute", text: `{"attr":"hello"}`, want: Spec{Attr: "hello"}},
		{name: "file and nested attribute", text: `{"file":"nix/ci.nix","attr":"checks.x86_64-linux.test"}`, want: Spec{File: "nix/ci.nix", Attr: "checks.x86_64-linux.test"}},
		{name: "whole file", text: `{}`, want: Spec{}},
		{name: "flake output", text: `{"flake":"packages.x86_64-linux.hello","impure":true}`, want: Spec{Flake: "packages.x86_64-linux.hello", Impure: true}},
		{name: "unknown field", text: `{"atr":"hello"}`, err: `unknown field "atr"`},
		{name: "trailing data", text: `{"attr":"a"} {}`, err: "data after"},
		{name: "not JSON", text: `(build hello)`, err: "invalid character"},
		{name: "flake with attr", text: `{"flake":"hello","attr":"hello"}`, err: "give one or the other"},
		{name: "attr with a space", text: `{"attr":"hello world"}`, err: "field attr"},
		{name: "attr that is an option", text: `{"attr":"--option"}`, err: "field attr"},
		{name: "flake output with a reference", text: `{"flake":"github:x/y#z"}`, err: "field flake"},
		{name: "absolute file", text: `{"file":"/etc/passwd"}`, err: "field file"},
		{name: "file outside the tree", text: `{"file":"../x.nix"}`, err: "field file"},
		{name: "file not clean", text: `{"file":"a//b.nix"}`, err: "field file"},
		{name: "impure without flake", text: `{"attr":"a","impure":true}`, err: "field impure"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseSpec(c.text)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			case c.err == "" && got != c.want:
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestSpecString(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{name: "attribute", spec: Spec{Attr: "hello"}, want: "default.nix -A hello"},
		{name: "file", spec: Spec{File: "ci.nix"}, want: "ci.nix"},
		{name: "flake", spec: Spec{Flake: "hello"}, want: ".#hello"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.spec.String(); got != c.want {
				t.Errorf("%q, want %q", got, c.want)
			}
		})
	}
}

// FuzzParseSpec checks that a spec that parses is valid and reads back the same from
// its encoding, and that nothing panics.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{`{"attr":"hello"}`, `{"flake":"a.b","impure":true}`, `{"file":"x/y.nix","attr":"a'b"}`, `{"file":"../x"}`, `{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseSpec(text)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed spec %+v does not validate: %v", s, err)
		}
		again, err := ParseSpec(s.Encode())
		if err != nil || again != s {
			t.Fatalf("%+v encodes as %s, which reads back as %+v, %v", s, s.Encode(), again, err)
		}
	})
}
