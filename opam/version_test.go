package opam

import (
	"math/rand"
	"slices"
	"testing"
)

func TestCompareVersionsTrickyPairs(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0~beta", "1.0", -1},
		{"1.0~~", "1.0~", -1},
		{"1.0~~a", "1.0~", -1},
		{"1.0~", "1.0", -1},
		{"~", "", -1},
		{"", "a", -1},
		{"1.0", "1.0a", -1},
		{"1.0a", "1.0.1", -1}, // letters sort before other characters
		{"1.0", "1.0.1", -1},
		{"1.0+beta", "1.0", 1},
		{"1.0-rc1", "1.0~rc1", 1},
		{"1.01", "1.1", 0},
		{"1.00", "1.0", 0},
		{"001", "1", 0},
		{"1.2.3", "1.10", -1},
		{"v0.14", "v0.9", 1},
		{"v0.14.0", "v0.14", 1},
		{"0.9", "0.9.0", -1},
		{"4.14.1", "4.14.1+flambda", -1},
		{"5.0.0~alpha1", "5.0.0~beta1", -1},
		{"5.0.0~rc1", "5.0.0", -1},
		{"2.0.0", "2.0.0~rc", 1},
		{"1.a", "1.B", 1},
		{"1.A", "1.a", -1},
		{"1_0", "1.0", 1},
		{"1.0", "1-0", 1},
		{"99999999999999999999999", "99999999999999999999998", 1},
		{"0", "", 0},
		{"a", "a0", 0},
		{"1.0.0~", "1.0", 1},
		{"20220101", "2022.01.01", 1},
	} {
		got := CompareVersions(c.a, c.b)
		if got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if back := CompareVersions(c.b, c.a); back != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, not the opposite of the reverse", c.b, c.a, back)
		}
	}
}

func TestCompareVersionsIsATotalPreorder(t *testing.T) {
	alphabet := []string{"0", "1", "9", "10", ".", "~", "-", "+", "a", "z", "A", "_"}
	r := rand.New(rand.NewSource(1))
	gen := func() string {
		n := r.Intn(6)
		s := ""
		for i := 0; i < n; i++ {
			s += alphabet[r.Intn(len(alphabet))]
		}
		return s
	}
	vs := make([]string, 300)
	for i := range vs {
		vs[i] = gen()
	}
	slices.SortFunc(vs, CompareVersions)
	for i := 0; i+1 < len(vs); i++ {
		for j := i + 1; j < len(vs) && j < i+20; j++ {
			if CompareVersions(vs[i], vs[j]) > 0 {
				t.Fatalf("after sorting, %q > %q", vs[i], vs[j])
			}
		}
	}
}

func TestParsePackage(t *testing.T) {
	p, ok := ParsePackage("ocaml-base-compiler.5.2.0~rc1")
	if !ok || p.Name != "ocaml-base-compiler" || p.Version != "5.2.0~rc1" || p.String() != "ocaml-base-compiler.5.2.0~rc1" {
		t.Errorf("ParsePackage = %+v %v", p, ok)
	}
	for _, bad := range []string{"noversion", ".1.0", "foo.", "f o.1", "123.4"} {
		if _, ok := ParsePackage(bad); ok {
			t.Errorf("ParsePackage(%q) accepted", bad)
		}
	}
}
