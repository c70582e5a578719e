package opam

import "strings"

// CompareVersions orders two version strings as opam does (OpamVersionCompare, the
// Debian algorithm): alternating non-digit and digit runs; non-digit runs compare
// character by character with `~` before the end of the string, the end before
// letters, and letters before other characters; digit runs compare as numbers.
// It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	if a == b {
		return 0
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ca, cb := charOrder(a, i), charOrder(b, j)
			if ca != cb {
				if ca < cb {
					return -1
				}
				return 1
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		first := 0
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if first == 0 {
				first = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if first != 0 {
			if first < 0 {
				return -1
			}
			return 1
		}
	}
	return 0
}

// charOrder is the weight of s[i] in a non-digit run; past the end counts as 0.
func charOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	}
	return int(c) + 256
}

// PackageName is the name of an opam package.
type PackageName string

// Version is the version of an opam package.
type Version string

// Compare orders v and w as opam does.
func (v Version) Compare(w Version) int { return CompareVersions(string(v), string(w)) }

// Package is one version of a package, written name.version.
type Package struct {
	Name    PackageName
	Version Version
}

func (p Package) String() string { return string(p.Name) + "." + string(p.Version) }

// ParsePackage splits "name.version" at the first dot.
func ParsePackage(s string) (Package, bool) {
	i := strings.IndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return Package{}, false
	}
	p := Package{PackageName(s[:i]), Version(s[i+1:])}
	return p, ValidName(string(p.Name)) && ValidVersion(string(p.Version))
}

// ValidName reports whether s is a valid package name: letters, digits, `_`, `-` and
// `+`, with at least one letter.
func ValidName(s string) bool {
	alpha := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlpha(c):
			alpha = true
		case isDigit(c) || c == '_' || c == '-' || c == '+':
		default:
			return false
		}
	}
	return alpha
}

// ValidVersion reports whether s is a valid version: letters, digits and `-_+.~`.
func ValidVersion(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlpha(c) || isDigit(c) || strings.IndexByte("-_+.~", c) >= 0) {
			return false
		}
	}
	return true
}
