package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRootHoldsGoMod(t *testing.T) {
	if _, err := os.Stat(filepath.Join(Root(), "go.mod")); err != nil {
		t.Fatalf("Root() = %s has no go.mod: %v", Root(), err)
	}
}

func TestCacheDirIsCreated(t *testing.T) {
	t.Setenv("KILN_TEST_CACHE", t.TempDir())
	d := CacheDir(t, "x/y")
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		t.Fatalf("CacheDir did not create %s: %v", d, err)
	}
}
