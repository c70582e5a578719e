package lint

import (
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/opam"
)

// ProjectContext is the lint of a project's own opam files in its repository, as a
// project's CI runs it: `opam lint`'s rules only. The opam-repository rules (name and
// version against a package directory, checksums, publication fields) and the upstream
// archive checks are for packages published to a repository, not for a project's
// development files.
func ProjectContext() Context {
	return Context{Checks: OpamLint}
}

// LintProjectFile checks one opam file of a project with ProjectContext, as
// `opam lint FILE` does: the package name comes from the file's name (NAME.opam, or
// NAME/opam), its version from the file itself. Findings name filename and each is
// given once.
func LintProjectFile(filename string, data []byte) []Finding {
	filename = filepath.ToSlash(filename)
	pkg := opam.Package{Name: opam.PackageName(projectPackageName(filename))}
	l := &linter{in: Input{Package: pkg, Files: map[string]File{"opam": {Data: data}}}, ctx: ProjectContext(), file: filename}
	l.run()
	var out []Finding
	seen := map[string]bool{}
	for _, f := range l.out {
		if k := f.String(); !seen[k] {
			seen[k] = true
			out = append(out, f)
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	return out
}

// projectPackageName is the package name a project's opam file implies: NAME for
// NAME.opam, the folder's name (up to a dot) for FOLDER/opam, none for a root "opam".
func projectPackageName(filename string) string {
	base := path.Base(filename)
	if base != "opam" {
		return strings.TrimSuffix(base, ".opam")
	}
	dir := path.Dir(filename)
	if dir == "." || dir == "/" {
		return ""
	}
	name, _, _ := strings.Cut(path.Base(dir), ".")
	return name
}
