package nixrun

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Output is the typed result of a Nix job, in cluster.Result.Output.
type Output struct {
	// Spec is what was built, as a user would type it ("default.nix -A hello").
	Spec string `json:"spec"`
	// Paths are the output store paths built.
	Paths []string `json:"paths,omitempty"`
	// ClosureSize is the size in bytes of the outputs and everything they refer to
	// (nix-store -q --requisites, --size); ClosurePaths counts those store paths.
	ClosureSize  int64 `json:"closure_size,omitempty"`
	ClosurePaths int   `json:"closure_paths,omitempty"`
	// Failure says why the build failed, when it did.
	Failure *Failure `json:"failure,omitempty"`
}

// FailureKind says which part of a Nix job failed; both are the project's fault.
type FailureKind string

// The kinds of failure of a Nix job.
const (
	FailEvaluation FailureKind = "evaluation" // the expression does not evaluate
	FailBuild      FailureKind = "build"      // a builder failed
)

// Failure is a Nix job that failed through the project's fault.
type Failure struct {
	Kind FailureKind `json:"kind"`
	// Lines explain it: Nix's error: lines (with the code they point at), and for a
	// build failure the last lines the builder wrote before them.
	Lines []string `json:"lines"`
}

// Error says which part failed and Nix's first error line.
func (f *Failure) Error() string {
	first := ""
	for _, l := range f.Lines {
		if strings.HasPrefix(l, "error:") {
			first = strings.TrimSpace(strings.TrimPrefix(l, "error:"))
			break
		}
	}
	if first == "" && len(f.Lines) > 0 {
		first = f.Lines[len(f.Lines)-1]
	}
	return fmt.Sprintf("nix %s failed: %s", f.Kind, first)
}

// DecodeOutput reads a job's Result.Output written by this runner.
func DecodeOutput(raw json.RawMessage) (*Output, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("nix job output: empty")
	}
	var o Output
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("nix job output: %w", err)
	}
	return &o, nil
}

// maxLines bounds a failure's lines; builderTail is how many of the builder's last
// lines a build failure keeps.
const (
	maxLines    = 30
	builderTail = 20
)

var (
	// nixOwn are the lines Nix writes around a build, which explain nothing.
	nixOwn = regexp.MustCompile(`^(these \d+ derivations will be built:|this derivation will be built:|these \d+ paths will be fetched|this path will be fetched|building '/|warning: |\(use '--show-trace')|^\s+/nix/store/\S+$`)
	// builderFailed is Nix's line for a builder that exited with an error, and a
	// fixed-output derivation whose hash is wrong: both the project's fault.
	builderFailed = regexp.MustCompile(`^error: (builder for '[^']+' failed|hash mismatch in fixed-output derivation)`)
	// logPrefix is the derivation's name nix build -L puts before a builder's lines.
	logPrefix = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*> `)
	// infraError are Nix's errors that are the machine's fault: no daemon or store
	// access, a damaged store, substituters or downloads that fail, a sandbox that
	// cannot be set up (a worker's sandbox paths that do not exist), a full disk.
	infraError = regexp.MustCompile(`^error: .*(cannot connect to (socket|daemon)|Permission denied|Operation not permitted|` +
		`No space left on device|SQLite|database disk image|is corrupt|hash mismatch importing path|path '[^']*' is not valid|` +
		`unable to download|some substitutes .* failed|binary cache .* does not exist|lacks a signature by a trusted key|` +
		`while setting up the build environment|sandbox|cloning builder process|getting attributes of path|opening lock file|` +
		`cannot open connection to remote store|creating directory '/nix)`)
)

// evaluationFailure explains a failed evaluation from its output: Nix's error block,
// from the first error: line on.
func evaluationFailure(lines []string) *Failure {
	var keep []string
	for _, l := range lines {
		if len(keep) == 0 && !strings.HasPrefix(l, "error:") {
			continue
		}
		if !nixOwn.MatchString(l) {
			keep = append(keep, strings.TrimRight(l, " "))
		}
	}
	keep = trimBlank(keep)
	if len(keep) == 0 {
		keep = trimBlank(lastLines(lines, builderTail))
	}
	return &Failure{Kind: FailEvaluation, Lines: cap30(keep)}
}

// buildFailure explains a failed build: the builder's last lines before Nix's error:
// lines, and those lines.
func buildFailure(lines []string) *Failure {
	var out, errs []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "error:"):
			errs = append(errs, l)
		case nixOwn.MatchString(l) || strings.TrimSpace(l) == "":
		default:
			out = append(out, logPrefix.ReplaceAllString(l, ""))
		}
	}
	keep := append(lastLines(out, builderTail), errs...)
	return &Failure{Kind: FailBuild, Lines: cap30(keep)}
}

// infrastructure returns Nix's error line that says the failure is the machine's
// fault, or "".
func infrastructure(lines []string) string {
	for _, l := range lines {
		if infraError.MatchString(l) {
			return l
		}
	}
	return ""
}

// builderFault reports whether the output says a builder failed.
func builderFault(lines []string) bool {
	for _, l := range lines {
		if builderFailed.MatchString(l) {
			return true
		}
	}
	return false
}

func lastLines(lines []string, n int) []string {
	return lines[max(0, len(lines)-n):]
}

func trimBlank(lines []string) []string {
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func cap30(lines []string) []string {
	if len(lines) > maxLines {
		return lines[:maxLines]
	}
	return lines
}
