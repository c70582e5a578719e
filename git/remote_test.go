package git

import (
	"strings"
	"testing"
)

func TestMirrorName(t *testing.T) {
	for _, tc := range []struct{ url, prefix string }{
		{"https://github.com/ocaml/dune.git", "github.com-ocaml-dune-"},
		{"https://github.com/ocaml/dune", "github.com-ocaml-dune-"},
		{"https://x-access-token:abc@github.com/ocaml/dune", "github.com-ocaml-dune-"},
		{"git@github.com:ocaml/dune.git", "github.com-ocaml-dune-"},
		{"/srv/git/../repo", "srv-git-..-repo-"},
	} {
		got := MirrorName(tc.url)
		if !strings.HasPrefix(got, tc.prefix) || strings.ContainsAny(got, "/:@") {
			t.Errorf("MirrorName(%q) = %q, want prefix %q and no separators", tc.url, got, tc.prefix)
		}
	}
	if MirrorName("https://github.com/a/b") == MirrorName("https://github.com/a-b") {
		t.Error("two remotes share a mirror")
	}
	if MirrorName("https://u:p@github.com/a/b") != MirrorName("https://github.com/a/b") {
		t.Error("credentials change the mirror")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"fetch https://user:tok@host/x.git failed": "fetch https://host/x.git failed",
		"https://tok@host/x":                       "https://host/x",
		"ssh://git:pw@host/x":                      "ssh://git:***@host/x",
		"git@github.com:a/b":                       "git@github.com:a/b",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzMirrorName(f *testing.F) {
	for _, s := range []string{"https://github.com/ocaml/dune", "git@h:a/b", "../..", "", "http://u:p@h/%2e%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, url string) {
		name := MirrorName(url)
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") {
			t.Fatalf("MirrorName(%q) = %q is not a safe path element", url, name)
		}
		if MirrorName(url) != name {
			t.Fatal("not deterministic")
		}
		clean, c, ok := splitUserinfo(url)
		if ok && c.Token != "" && strings.Contains(Redact(url), c.Token) && !strings.Contains(clean, c.Token) {
			t.Fatalf("Redact(%q) keeps the token", url)
		}
	})
}
