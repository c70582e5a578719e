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

func TestWithImages(t *testing.T) {
	const ref = "127.0.0.1:5000/ocaml/opam:debian-12-ocaml-4.13"
	cases := []struct {
		name   string
		images map[string]string
		want   []string // each platform's image, "" where it is made from Debian
		err    string
	}{
		{"none", nil, []string{"", ""}, ""},
		{"amd64 from a registry", map[string]string{"debian-12-4.13_amd64": ref}, []string{ref, ""}, ""},
		{"unknown platform", map[string]string{"debian-11-4.13_amd64": ref}, nil, `image for platform "debian-11-4.13_amd64": no such platform (platforms: debian-12-4.13_amd64, debian-12-4.13_arm64)`},
		{"empty reference", map[string]string{"debian-12-4.13_arm64": ""}, nil, "platform debian-12-4.13_arm64: empty image reference"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, err := WithImages(Default(), c.images)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range ps {
				if c.want[i] == "" {
					if p.Debian == nil || p.Image != Default()[i].Image {
						t.Errorf("%s: image %q (debian %v), want the local Debian one", p.Name, p.Image, p.Debian)
					}
					continue
				}
				if p.Image != c.want[i] || p.Debian != nil {
					t.Errorf("%s: image %q (debian %v), want %q and nothing made locally", p.Name, p.Image, p.Debian, c.want[i])
				}
				if Digest([]Platform{p}) == Digest([]Platform{Default()[i]}) {
					t.Errorf("%s: another image, the same matrix digest", p.Name)
				}
			}
		})
	}
}
