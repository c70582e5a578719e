package lint

import (
	_ "embed"
	"strings"
	"sync"
)

//go:embed spdx.txt
var spdxData string

//go:embed spdx21.txt
var spdx21Data string

var (
	spdxOnce       sync.Once
	spdxLicenses   map[string]bool
	spdxExceptions map[string]bool
	// unknown21Licenses and unknown21Exceptions hold the identifiers opam 2.1 does
	// not know.
	unknown21Licenses   map[string]bool
	unknown21Exceptions map[string]bool
)

func loadSPDX() {
	spdxLicenses, spdxExceptions = readIDs(spdxData)
	unknown21Licenses, unknown21Exceptions = readIDs(spdx21Data)
}

// readIDs reads a list of license identifiers, then exception identifiers after the
// marker line, lower-cased.
func readIDs(data string) (licenses, exceptions map[string]bool) {
	licenses, exceptions = map[string]bool{}, map[string]bool{}
	set := licenses
	for _, line := range strings.Split(data, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "-- exceptions":
			set = exceptions
		default:
			set[strings.ToLower(line)] = true
		}
	}
	return licenses, exceptions
}

// ValidLicense reports whether s is an SPDX license expression: identifiers
// (optionally followed by +), LicenseRef-..., combined with AND, OR, WITH and
// parentheses. Identifiers match without regard to case.
func ValidLicense(s string) bool {
	spdxOnce.Do(loadSPDX)
	toks := spdxTokens(s)
	if len(toks) == 0 {
		return false
	}
	p := &spdxParser{toks: toks}
	return p.expr() && p.i == len(p.toks)
}

func spdxTokens(s string) []string {
	var out []string
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')':
			out = append(out, s[i:i+1])
			i++
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' && s[j] != '(' && s[j] != ')' {
				j++
			}
			tok := s[i:j]
			// Operators are accepted in any case, as opam does.
			if up := strings.ToUpper(tok); up == "AND" || up == "OR" || up == "WITH" {
				tok = up
			}
			out = append(out, tok)
			i = j
		}
	}
	return out
}

type spdxParser struct {
	toks []string
	i    int
}

func (p *spdxParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *spdxParser) expr() bool {
	if !p.term() {
		return false
	}
	for p.peek() == "AND" || p.peek() == "OR" {
		p.i++
		if !p.term() {
			return false
		}
	}
	return true
}

func (p *spdxParser) term() bool {
	t := p.peek()
	if t == "(" {
		p.i++
		if !p.expr() || p.peek() != ")" {
			return false
		}
		p.i++
		return true
	}
	if t == "" || t == ")" || t == "AND" || t == "OR" || t == "WITH" {
		return false
	}
	p.i++
	if !spdxID(t) {
		return false
	}
	if p.peek() == "WITH" {
		p.i++
		if !spdxExceptions[strings.ToLower(p.peek())] {
			return false
		}
		p.i++
	}
	return true
}

func spdxID(t string) bool {
	if rest, ok := strings.CutPrefix(t, "LicenseRef-"); ok {
		return rest != "" && idString(rest)
	}
	if strings.HasPrefix(t, "DocumentRef-") {
		doc, lic, ok := strings.Cut(t, ":")
		return ok && idString(strings.TrimPrefix(doc, "DocumentRef-")) && strings.HasPrefix(lic, "LicenseRef-") && idString(strings.TrimPrefix(lic, "LicenseRef-"))
	}
	t = strings.TrimSuffix(t, "+")
	return spdxLicenses[strings.ToLower(t)]
}

func idString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// validLicense21 is opam 2.1's license check: one identifier, optionally followed by
// + and by WITH and an exception; no AND, OR, parentheses or LicenseRef.
func validLicense21(s string) bool {
	spdxOnce.Do(loadSPDX)
	toks := spdxTokens(s)
	switch {
	case len(toks) == 1:
	case len(toks) == 3 && toks[1] == "WITH":
		e := strings.ToLower(toks[2])
		if !spdxExceptions[e] || unknown21Exceptions[e] {
			return false
		}
	default:
		return false
	}
	return !strings.HasPrefix(toks[0], "LicenseRef-") && !strings.HasPrefix(toks[0], "DocumentRef-") && spdxID(toks[0]) &&
		!unknown21Licenses[strings.ToLower(strings.TrimSuffix(toks[0], "+"))]
}
