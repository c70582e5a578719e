// Package opamsourcestest gives tests opam repositories made of real packages: the
// opam files of the shared data's opam-repository snapshot, their source archives
// from the shared opam-sources folder, served on loopback with archives the test
// writes itself.
package opamsourcestest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// Sources serves the shared opam-sources folder, and the archives a test adds, on
// loopback, counting requests.
type Sources struct {
	Dir string // the opam-sources folder
	URL string // http://127.0.0.1:PORT

	mu       sync.Mutex
	requests map[string]int
	archives map[string][2]string // name.version → file, sha256 (MANIFEST.tsv)
	written  map[string][]byte    // path → an archive the test wrote
}

// Serve serves the shared opam-sources folder (the test skips without it).
func Serve(t testing.TB) *Sources {
	t.Helper()
	dir := testenv.SharedData(t, "opam-sources")
	s := &Sources{Dir: dir, requests: map[string]int{}, archives: map[string][2]string{}, written: map[string][]byte{}}
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 8 || cols[0] == "name" || strings.HasPrefix(cols[7], "extra-source/") {
			continue
		}
		s.archives[cols[0]+"."+cols[1]] = [2]string{cols[7], cols[2]}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(dir))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[r.URL.Path]++
		data, ok := s.written[r.URL.Path]
		s.mu.Unlock()
		if ok {
			w.Write(data)
			return
		}
		files.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + ln.Addr().String()
	return s
}

// Requests returns how many times each path was asked for.
func (s *Sources) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// AddArchive serves a .tar.gz of files (path → text, under a folder named after the
// archive) as name and returns its url section for an opam file.
func (s *Sources) AddArchive(t testing.TB, name string, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	top := strings.TrimSuffix(name, ".tar.gz")
	for _, p := range paths {
		if err := tw.WriteHeader(&tar.Header{Name: top + "/" + p, Mode: 0o644, Size: int64(len(files[p])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[p]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	sum := sha256.Sum256(buf.Bytes())
	s.mu.Lock()
	s.written["/"+name] = buf.Bytes()
	s.mu.Unlock()
	return "url {\n  src: \"" + s.URL + "/" + name + "\"\n  checksum: \"sha256=" + hex.EncodeToString(sum[:]) + "\"\n}\n"
}

var (
	urlSection = regexp.MustCompile(`(?s)\nurl \{.*?\n\}`)
	extraSrc   = regexp.MustCompile(`(?s)(extra-source "([^"]+)" \{\s*src:\s*)"[^"]*"`)
)

// Repository returns the files of an opam repository (the repo file and
// packages/NAME/NAME.VERSION/opam) holding the packages of set as the snapshot has
// them, their url and extra-source sections pointing at s (the archives' sha256 from
// the manifest, the extra sources' own checksums kept).
func (s *Sources) Repository(t testing.TB, set []string) map[string]string {
	t.Helper()
	snap := repotest.Checkout(t)
	files := map[string]string{"repo": "opam-version: \"2.0\"\n"}
	for _, nv := range set {
		name, _, _ := strings.Cut(nv, ".")
		rel := filepath.Join("packages", name, nv, "opam")
		data, err := os.ReadFile(filepath.Join(snap, rel))
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		text := string(data)
		if a, ok := s.archives[nv]; ok {
			text = urlSection.ReplaceAllString(text, "\nurl {\n  src: \""+s.URL+"/"+a[0]+"\"\n  checksum: \"sha256="+a[1]+"\"\n}")
		}
		files[rel] = extraSrc.ReplaceAllString(text, `${1}"`+s.URL+"/extra-source/"+nv+`/${2}"`)
	}
	return files
}

// SystemSet are the real packages of a switch on Debian 12's OCaml 4.13.1 (the
// ocaml-system compiler and its base packages) and ocamlfind, whose source archive
// the shared folder has: a small real set for end-to-end builds.
var SystemSet = []string{"ocaml.4.13.1", "ocaml-system.4.13.1", "ocaml-config.2", "base-unix.base", "base-threads.base",
	"base-bigarray.base", "ocamlfind.1.9.6"}

// Opam is the opam file of a package a test writes: the fields opam's lint asks
// for (its maintainer name@example.org), then body.
func Opam(name, body string) string {
	return `opam-version: "2.0"
synopsis: "A package of the end-to-end test"
description: "Written by the test."
maintainer: "` + name + `@example.org"
authors: "test"
license: "MIT"
homepage: "https://example.org/` + name + `"
bug-reports: "https://example.org/` + name + `/issues"
dev-repo: "git+https://example.org/` + name + `.git"
` + body
}
