package ocamlci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
)

// Analysis is what kiln learns from a commit's source tree before building it.
type Analysis struct {
	// OpamFiles maps each opam file's path (relative, '/'-separated) to its content.
	OpamFiles map[string][]byte `json:"opam_files"`
	// Packages are the local packages, one per opam file, named by the file
	// (foo.opam or foo/opam) and pinned at version "dev".
	Packages []string `json:"packages"`
	// PinDepends are the pin-depends of the local packages, by package.
	PinDepends []PinDepend `json:"pin_depends,omitempty"`
	// OCamlFormat is the version named in .ocamlformat, empty when there is none or it
	// names no version.
	OCamlFormat string `json:"ocamlformat,omitempty"`
	// Dune reports whether the project builds with dune (a dune-project at the root).
	Dune bool `json:"dune"`
	// MonorepoLocks are opam-monorepo lock files (*.opam.locked with
	// x-opam-monorepo-version), which select the monorepo build.
	MonorepoLocks []string `json:"monorepo_locks,omitempty"`
	// Config is the repository's .kiln.yml (the zero Config when absent).
	Config Config `json:"config"`
}

// PinDepend is a package version a local package pins to a source (a git URL with an
// optional #ref).
type PinDepend struct {
	Package string `json:"package"` // name.version
	URL     string `json:"url"`
}

// maxOpamDepth is how deep below the root opam files are looked for, as the OCaml
// service does: the root and two levels of folders.
const maxOpamDepth = 3

// Analyse reads the source tree checked out at dir. Malformed opam files and
// configuration are errors naming the file.
func Analyse(dir string) (*Analysis, error) {
	a := &Analysis{OpamFiles: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			name := d.Name()
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || strings.HasPrefix(name, "test") ||
				strings.Count(rel, "/")+1 >= maxOpamDepth {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		switch {
		case strings.HasSuffix(rel, ".opam.locked"):
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(data, []byte("x-opam-monorepo-version")) {
				a.MonorepoLocks = append(a.MonorepoLocks, rel)
			}
		case strings.HasSuffix(rel, ".opam") || d.Name() == "opam":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			a.OpamFiles[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("analyse %s: %w", dir, err)
	}
	names := map[string]string{}
	for rel, data := range a.OpamFiles {
		name := packageNameOf(rel)
		if name == "" {
			continue
		}
		if prev, ok := names[name]; ok {
			return nil, fmt.Errorf("%s and %s both define package %s", prev, rel, name)
		}
		names[name] = rel
		f, err := opam.Parse(rel, data)
		if err != nil {
			return nil, err
		}
		pins, err := f.PinDepends()
		if err != nil {
			return nil, fmt.Errorf("%s: pin-depends: %w", rel, err)
		}
		for _, p := range pins {
			a.PinDepends = append(a.PinDepends, PinDepend{Package: p.Package.String(), URL: p.URL})
		}
		a.Packages = append(a.Packages, name+".dev")
	}
	sort.Strings(a.Packages)
	sort.Slice(a.PinDepends, func(i, j int) bool { return a.PinDepends[i].Package < a.PinDepends[j].Package })
	sort.Strings(a.MonorepoLocks)
	if _, err := os.Stat(filepath.Join(dir, "dune-project")); err == nil {
		a.Dune = true
	}
	if a.OCamlFormat, err = ocamlformatVersion(filepath.Join(dir, ".ocamlformat")); err != nil {
		return nil, err
	}
	if a.Config, err = LoadConfig(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, err
	}
	return a, nil
}

// packageNameOf returns the package an opam file defines: "foo" for foo.opam and
// foo/opam, "" for a bare opam file at the root (named by its name field).
func packageNameOf(rel string) string {
	base := filepath.Base(rel)
	if base == "opam" {
		dir := filepath.Dir(rel)
		if dir == "." {
			return ""
		}
		return strings.SplitN(filepath.Base(dir), ".", 2)[0]
	}
	return strings.TrimSuffix(base, ".opam")
}

// ocamlformatVersion reads the version = … line of an .ocamlformat file.
func ocamlformatVersion(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.TrimSpace(k) != "version" {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || strings.ContainsAny(v, " \t\"'") {
			return "", fmt.Errorf(".ocamlformat:%d: malformed version %q", line, v)
		}
		return v, nil
	}
	return "", nil
}
