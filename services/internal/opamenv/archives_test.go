package opamenv

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func sha256Of(b []byte) opam.Checksum {
	s := sha256.Sum256(b)
	return opam.Checksum{Algo: "sha256", Hex: hex.EncodeToString(s[:])}
}

func md5Of(b []byte) opam.Checksum {
	s := md5.Sum(b)
	return opam.Checksum{Algo: "md5", Hex: hex.EncodeToString(s[:])}
}

// upstream serves files by path and counts the requests of each.
type upstream struct {
	*httptest.Server
	files map[string][]byte
	mu    sync.Mutex
	hits  map[string]int
}

func newUpstream(t *testing.T, files map[string][]byte) *upstream {
	u := &upstream{files: files, hits: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits[r.URL.Path]++
		u.mu.Unlock()
		data, ok := u.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path]
}

func TestArchivesGet(t *testing.T) {
	tarball := []byte("a source archive")
	other := []byte("another archive")
	up := newUpstream(t, map[string][]byte{"/a.tar.gz": tarball, "/b.tar.gz": other})
	local := filepath.Join(t.TempDir(), "c.tar.gz")
	if err := os.WriteFile(local, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		url      opam.URL
		wantErr  string
		wantPath string // the archive's path in the cache, relative
	}{
		{"http with sha256 and md5", opam.URL{Src: up.URL + "/a.tar.gz", Checksums: []opam.Checksum{sha256Of(tarball), md5Of(tarball)}},
			"", CachePath(sha256Of(tarball))},
		{"file URL", opam.URL{Src: "file://" + local, Checksums: []opam.Checksum{md5Of(tarball)}}, "", CachePath(md5Of(tarball))},
		{"a mirror after a missing source", opam.URL{Src: up.URL + "/gone.tar.gz", Mirrors: []string{up.URL + "/b.tar.gz"}, Checksums: []opam.Checksum{sha256Of(other)}},
			"", CachePath(sha256Of(other))},
		{"checksum mismatch", opam.URL{Src: up.URL + "/b.tar.gz", Checksums: []opam.Checksum{sha256Of([]byte("not this"))}},
			"checksum mismatch: the opam file says sha256=", ""},
		{"missing upstream", opam.URL{Src: up.URL + "/nowhere.tar.gz", Checksums: []opam.Checksum{sha256Of([]byte("x"))}}, "404", ""},
		{"git source", opam.URL{Src: "git+https://example.org/x.git", Checksums: []opam.Checksum{sha256Of([]byte("x"))}}, ErrNotCacheable.Error(), ""},
		{"no checksum", opam.URL{Src: up.URL + "/a.tar.gz"}, ErrNotCacheable.Error(), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewArchives(t.TempDir(), ArchivesOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ar, err := a.Get(context.Background(), c.url)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), c.url.Src) {
					t.Fatalf("Get = %+v, %v; want an error naming %s and %q", ar, err, c.url.Src, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ar.Hit || ar.Path != filepath.Join(a.Dir(), c.wantPath) {
				t.Errorf("Get = %+v, want a download to %s", ar, c.wantPath)
			}
			// Every checksum finds it, as opam looks it up.
			for _, sum := range c.url.Checksums {
				if _, err := os.Stat(filepath.Join(a.Dir(), CachePath(sum))); err != nil {
					t.Errorf("not kept under %s: %v", sum, err)
				}
			}
			again, err := a.Get(context.Background(), c.url)
			if err != nil || !again.Hit || again.Path != ar.Path {
				t.Errorf("second Get = %+v, %v; want a hit", again, err)
			}
		})
	}
}

func TestArchivesDownloadOnce(t *testing.T) {
	tarball := []byte(strings.Repeat("x", 1<<20))
	up := newUpstream(t, map[string][]byte{"/big.tar.gz": tarball})
	reg := prometheus.NewRegistry()
	a, err := NewArchives(t.TempDir(), ArchivesOptions{Register: reg})
	if err != nil {
		t.Fatal(err)
	}
	u := opam.URL{Src: up.URL + "/big.tar.gz", Checksums: []opam.Checksum{sha256Of(tarball)}}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Get(context.Background(), u); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of 8 concurrent Gets failed", failed.Load())
	}
	if n := up.count("/big.tar.gz"); n != 1 {
		t.Errorf("upstream asked %d times, want once", n)
	}
	if got := counterValue(t, a.lookups.WithLabelValues("download")); got != 1 {
		t.Errorf("downloads counted: %v, want 1", got)
	}
	if got := counterValue(t, a.lookups.WithLabelValues("hit")); got != 7 {
		t.Errorf("hits counted: %v, want 7", got)
	}
	if got := counterValue(t, a.bytes); got != float64(len(tarball)) {
		t.Errorf("bytes counted: %v, want %d", got, len(tarball))
	}
	second, err := NewArchives(t.TempDir(), ArchivesOptions{Register: reg})
	if err != nil {
		t.Fatalf("a second cache on the same registerer (another service's): %v", err)
	}
	if _, err := second.Get(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, a.lookups.WithLabelValues("download")); got != 2 {
		t.Errorf("downloads of both caches counted: %v, want 2", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetCounter().GetValue()
}
