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
	changed := arm
	changed.System = append(slices.Clone(arm.System), "extra.1")
	if Digest([]Platform{amd, arm}) == Digest([]Platform{amd, changed}) {
		t.Error("a platform's system packages changed, the digest did not")
	}
	if Digest([]Platform{amd, arm}) != Digest(Default()) {
		t.Error("the same matrix has two digests")
	}
}
