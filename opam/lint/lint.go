// Package lint checks opam package definitions the way `opam lint` does and the way the
// opam-repository CI does on pull requests: each finding has a stable rule id, a
// severity and a message naming the file and, where known, the line.
package lint

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
)

// Severity says whether a finding blocks (Error) or only informs (Warning).
type Severity uint8

// Severities.
const (
	Warning Severity = iota
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// MarshalText writes the severity as "warning" or "error".
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads "warning" or "error".
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "warning":
		*s = Warning
	case "error":
		*s = Error
	default:
		return fmt.Errorf("unknown lint severity %q (want warning or error)", b)
	}
	return nil
}

// Finding is one problem found in a package.
type Finding struct {
	// Rule is the stable id of the check: "opam-NN" for opam lint's check number NN,
	// "repo-..." for the opam-repository CI rules.
	Rule     string       `json:"rule"`
	Severity Severity     `json:"severity"`
	Package  opam.Package `json:"-"`
	// File is the file the finding is about, relative to the repository root when
	// the input says where the package lives.
	File    string   `json:"file"`
	Pos     opam.Pos `json:"pos"`
	Message string   `json:"message"`
}

func (f Finding) String() string {
	loc := f.File
	if f.Pos.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", f.File, f.Pos.Line, f.Pos.Col)
	}
	return fmt.Sprintf("%s: %s %s: %s", loc, f.Severity, f.Rule, f.Message)
}

// OpamNumber is opam lint's number for the finding's check, 0 for repository rules.
func (f Finding) OpamNumber() int {
	var n int
	if _, err := fmt.Sscanf(f.Rule, "opam-%d", &n); err != nil {
		return 0
	}
	return n
}

// BlocksCI reports whether opam-repository CI fails a pull request on the finding:
// every error, and every `opam lint` finding, warnings included (the CI reports them
// as "Error in pkg: Opam lint warning NN").
func (f Finding) BlocksCI() bool { return f.Severity == Error || f.OpamNumber() > 0 }

// File is one file of a package directory.
type File struct {
	Data []byte
	// Mode holds the permission bits when known (0 when not: the check is skipped).
	Mode fs.FileMode
}

// Input is a package directory: its files by path relative to the directory
// ("opam", "files/fix.patch", ...).
type Input struct {
	// Package is the name and version the directory implies (name.version).
	Package opam.Package
	// Dir is where the directory lives, used in messages, e.g.
	// "packages/foo/foo.1.0".
	Dir   string
	Files map[string]File
}

// Checks selects groups of rules.
type Checks uint8

// Groups of rules.
const (
	// OpamLint is what `opam lint` checks on an opam file.
	OpamLint Checks = 1 << iota
	// Publication is what opam-repository CI checks on a package added or changed
	// by a pull request.
	Publication
	// Archive is what the archive repository requires of a package moved there.
	Archive
)

// Context says what the lint should know beyond the package itself.
type Context struct {
	Checks Checks
	// New is true when the package name does not exist in the repository yet:
	// name collisions and restricted prefixes are checked then.
	New bool
	// Names holds the repository's existing package names, for name collisions.
	Names *Names
	// Twins lists the other versions of the package in the repository that opam
	// considers equal to this one (`1.0` and `1.00`), of which opam sees only one.
	Twins []opam.Version
	// Opam selects the opam release whose `opam lint` to reproduce: "" for the
	// current one (what opam-repository CI runs), "2.1" for opam 2.1 (Debian's).
	// See the rule catalogue in docs/opam-format.md for the differences.
	Opam string
	// CheckUpstream enables opam lint's rules on the upstream archive that need no
	// download (59: url without checksum), as opam-repository CI does.
	CheckUpstream bool
}

// DefaultContext is what opam-repository CI runs on a changed package.
func DefaultContext() Context {
	return Context{Checks: OpamLint | Publication, CheckUpstream: true}
}

// ReadDir reads a package directory from disk. root is the repository root and dir
// the package directory relative to it (packages/foo/foo.1.0).
func ReadDir(root, dir string) (Input, error) {
	in := Input{Dir: filepath.ToSlash(dir), Files: map[string]File{}}
	if p, ok := opam.ParsePackage(path.Base(in.Dir)); ok {
		in.Package = p
	}
	base := filepath.Join(root, dir)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var data []byte
		if info.Mode().IsRegular() {
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		in.Files[filepath.ToSlash(rel)] = File{Data: data, Mode: info.Mode()}
		return nil
	})
	if err != nil {
		return in, fmt.Errorf("read package directory %s: %w", dir, err)
	}
	return in, nil
}

// Lint checks a package directory and returns its findings, errors first.
func Lint(in Input, ctx Context) []Finding {
	l := &linter{in: in, ctx: ctx, file: path.Join(in.Dir, "opam")}
	if in.Dir == "" {
		l.file = "opam"
	}
	l.run()
	sort.SliceStable(l.out, func(i, j int) bool {
		if l.out[i].Severity != l.out[j].Severity {
			return l.out[i].Severity > l.out[j].Severity
		}
		return false
	})
	return l.out
}

// LintFile checks a single opam file with opam lint's rules, the package name and
// version coming from the file's fields or from pkg when given.
func LintFile(filename string, data []byte, pkg opam.Package, ctx Context) []Finding {
	dir := path.Dir(filepath.ToSlash(filename))
	if dir == "." {
		dir = ""
	}
	return Lint(Input{Package: pkg, Dir: dir, Files: map[string]File{"opam": {Data: data}}}, ctx)
}

type linter struct {
	in   Input
	ctx  Context
	file string
	f    *opam.File
	pkg  opam.Package
	out  []Finding
}

func (l *linter) add(rule string, sev Severity, pos opam.Pos, format string, args ...any) {
	l.out = append(l.out, Finding{Rule: rule, Severity: sev, Package: l.pkg, File: l.file, Pos: pos, Message: fmt.Sprintf(format, args...)})
}

func (l *linter) run() {
	l.pkg = l.in.Package
	opamFile, ok := l.in.Files["opam"]
	if !ok {
		l.add("opam-0", Error, opam.Pos{}, "File does not exist")
		return
	}
	f, err := opam.Parse(l.file, opamFile.Data)
	if err != nil {
		pos := opam.Pos{}
		msg := err.Error()
		if e, ok := err.(*opam.Error); ok {
			pos, msg = e.Pos, e.Msg
		}
		if l.opam21() {
			// opam 2.1 reports a syntax error as a format error.
			l.add("opam-2", Error, pos, "File format error at line %d, column %d: Parse error", pos.Line, max(pos.Col-1, 0))
			return
		}
		l.add("opam-1", Error, pos, "File does not parse: %s", msg)
		return
	}
	l.f = f
	if l.opam21() && !formatVersion21(f) {
		// opam 2.1 reads no further than an opam-version it does not support.
		l.add("opam-2", Error, l.itemPos("opam-version"), "File format error: unsupported or missing file format version; should be 2.0 or older")
		return
	}
	if l.pkg.Name == "" {
		l.pkg.Name = f.Name()
	}
	if l.pkg.Version == "" {
		l.pkg.Version = f.Version()
	}
	if l.ctx.Checks&OpamLint != 0 {
		l.opamLint()
	}
	if l.ctx.Checks&Publication != 0 {
		l.publication()
	}
	if l.ctx.Checks&Archive != 0 {
		l.archive()
	}
}

// formatVersion21 reports whether opam 2.1 reads f: its opam-version field is a
// string whose MAJOR.MINOR is at most 2.0.
func formatVersion21(f *opam.File) bool {
	v, ok := f.Field("opam-version")
	if !ok || v.Kind != opam.KString {
		return false
	}
	return opam.CompareVersions(noPatch(v.S), "2.0") <= 0
}

// noPatch is opam's OpamVersion.nopatch: what comes before a second dot, or else the
// leading run of digits and dots.
func noPatch(v string) string {
	if i := strings.IndexByte(v, '.'); i >= 0 {
		if j := strings.IndexByte(v[i+1:], '.'); j >= 0 {
			return v[:i+1+j]
		}
	}
	i := 0
	for i < len(v) && (v[i] == '.' || v[i] >= '0' && v[i] <= '9') {
		i++
	}
	return v[:i]
}
