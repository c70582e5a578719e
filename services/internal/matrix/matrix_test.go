package matrix

import (
	"slices"
	"testing"
)

func TestPoolsAndDigest(t *testing.T) {
	amd, arm := Debian("amd64"), Debian("arm64")
	cases := []struct {
		name  string
		ps    []Platform
		pools []string
	}{
		{"default", Default(), []string{"linux-x86_64", "linux-arm64"}},
		{"one pool twice", []Platform{amd, amd}, []string{"linux-x86_64"}},
		{"none", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Pools(c.ps); !slices.Equal(got, c.pools) {
				t.Errorf("Pools = %v, want %v", got, c.pools)
			}
		})
	}
	for _, c := range []struct {
		name   string
		change func(*Platform)
	}{
		{"system packages", func(p *Platform) { p.System = append(slices.Clone(p.System), "extra.1") }},
		{"compiler packages", func(p *Platform) { p.Compiler = []string{"ocaml-system.4.14.2", "ocaml.4.14.2"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			changed := arm
			c.change(&changed)
			if Digest([]Platform{amd, arm}) == Digest([]Platform{amd, changed}) {
				t.Errorf("a platform's %s changed, the digest did not", c.name)
			}
		})
	}
	if Digest([]Platform{amd, arm}) != Digest(Default()) {
		t.Error("the same matrix has two digests")
	}
}
