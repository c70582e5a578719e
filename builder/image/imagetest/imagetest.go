// Package imagetest gives tests of any package a Debian base image, made once with
// mmdebstrap and kept in the test cache (testenv.CacheDir "images"), keyed by suite,
// architecture and packages.
package imagetest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// Store opens the shared test image store.
func Store(t testing.TB) *image.Store {
	t.Helper()
	st, err := image.Open(testenv.CacheDir(t, "images"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Debian returns a Debian base (bookworm minbase, host architecture, with the extra
// packages), making it the first time. It needs root and mmdebstrap.
func Debian(t testing.TB, packages ...string) image.Base {
	t.Helper()
	return DebianWith(t, image.DebianOptions{Suite: "bookworm", Packages: packages})
}

// DebianWith is Debian with every option.
func DebianWith(t testing.TB, o image.DebianOptions) image.Base {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mmdebstrap")
	st := Store(t)
	if testing.Verbose() {
		st.Progress = image.NewProgress(os.Stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	b, err := st.EnsureDebian(ctx, o)
	if err != nil {
		t.Fatalf("debian base: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("debian base %s ready in %s", b.ID, d.Round(time.Second))
	}
	return b
}
