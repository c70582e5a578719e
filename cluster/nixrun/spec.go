// Package nixrun lets fleet workers build Nix expressions: a job's spec names a file
// and attribute, or a flake output, of the job's source tree; the worker evaluates it
// and builds it with the Nix commands (Debian's nix-bin, single-user, as root) with the
// Nix sandbox on, streams the log, and returns the output store paths and their closure
// size as the job's typed result (cluster.Result.Output). The Nix store is the cache.
package nixrun

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Spec is what a Nix job builds: Attr of File, or the flake output Flake of the flake
// at the root of the source tree.
type Spec struct {
	// File is the Nix file, relative to the source tree (default default.nix).
	File string `json:"file,omitempty"`
	// Attr is the attribute path built from File (nix-build -A); empty builds what the
	// file evaluates to.
	Attr string `json:"attr,omitempty"`
	// Flake is a flake output ("hello", "packages.x86_64-linux.hello"); set, the
	// flake.nix at the root is built and File and Attr must be empty.
	Flake string `json:"flake,omitempty"`
	// Impure evaluates the flake with --impure (it may read host paths such as
	// /usr/bin); expressions from a file are always evaluated so.
	Impure bool `json:"impure,omitempty"`
}

// attrPath is an attribute path or flake output: dot-separated Nix identifiers.
var attrPath = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'+-]*(\.[A-Za-z_][A-Za-z0-9_'+-]*)*$`)

// ParseSpec reads a job's spec text (JSON, as Encode writes it) and checks it. Unknown
// fields are errors.
func ParseSpec(text string) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("nix job spec: %w", err)
	}
	if dec.More() {
		return Spec{}, fmt.Errorf("nix job spec: data after the JSON object")
	}
	return s, s.Validate()
}

// Validate names the first field of s that is wrong.
func (s Spec) Validate() error {
	switch {
	case s.Flake != "" && (s.File != "" || s.Attr != ""):
		return fmt.Errorf("nix job spec: flake %q with file or attr: give one or the other", s.Flake)
	case s.Flake != "" && !attrPath.MatchString(s.Flake):
		return fmt.Errorf("nix job spec: field flake: %q is not a flake output (names separated by dots)", s.Flake)
	case s.Attr != "" && !attrPath.MatchString(s.Attr):
		return fmt.Errorf("nix job spec: field attr: %q is not an attribute path (names separated by dots)", s.Attr)
	case s.File != "" && !validFile(s.File):
		return fmt.Errorf("nix job spec: field file: %q is not a relative path inside the source tree", s.File)
	case s.Impure && s.Flake == "":
		return fmt.Errorf("nix job spec: field impure applies to flakes only")
	}
	return nil
}

func validFile(f string) bool {
	return !path.IsAbs(f) && path.Clean(f) == f && f != "." && !strings.HasPrefix(f, "../") && f != ".." &&
		!strings.ContainsAny(f, "\x00\n\\")
}

// file is the Nix file built (default.nix by default).
func (s Spec) file() string {
	if s.File == "" {
		return "default.nix"
	}
	return s.File
}

// Encode is the spec as a job's spec text.
func (s Spec) Encode() string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a struct of strings and a bool always encodes
	return strings.TrimSpace(b.String())
}

// String says what is built, as a user would type it.
func (s Spec) String() string {
	if s.Flake != "" {
		return ".#" + s.Flake
	}
	if s.Attr == "" {
		return s.file()
	}
	return s.file() + " -A " + s.Attr
}
