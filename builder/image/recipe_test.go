package image

import (
	"context"
	"strings"
	"testing"
)

// TestEnsureDebianRemakesOtherRecipes: a Debian base registered under the name by
// another recipe (an earlier kiln's, with the build host's resolv.conf) is not taken
// as current.
func TestEnsureDebianRemakesOtherRecipes(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := DebianOptions{Suite: "bookworm"}
	name, err := o.LocalName()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := st.Import(ctx, name, tarOf(t, entry{name: "etc/resolv.conf", body: "nameserver 10.0.0.1\n"}), Config{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		recipe  string
		current bool
	}{
		{"registered without a recipe", "", false},
		{"another recipe", strings.Replace(o.Recipe(), " --customize-hook", " --old-hook", 1), false},
		{"this recipe", o.Recipe(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := st.withLock(func() error { return st.setRef(name, refEntry{ID: b.ID, Recipe: c.recipe}) }); err != nil {
				t.Fatal(err)
			}
			if _, ok := st.currentDebian(ctx, name, o); ok != c.current {
				t.Errorf("current = %v, want %v", ok, c.current)
			}
		})
	}
	if !strings.Contains(o.Recipe(), `: > "$1/etc/resolv.conf"`) || !strings.Contains(o.Recipe(), `rm -f "$1/etc/hostname"`) {
		t.Errorf("recipe keeps the host's files: %s", o.Recipe())
	}
}
