package opamref

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// RepoPlaceholder stands for the repository checkout in recorded command lines and
// outputs, so that answers recorded in one checkout replay in another.
const RepoPlaceholder = "$REPO"

// ErrNotRecorded is returned (wrapped) by a replaying Opam asked a question that its
// answers do not hold.
var ErrNotRecorded = errors.New("answer not recorded")

// Answer is one of opam's recorded answers: the command line asked (with the checkout
// written as RepoPlaceholder), its standard output and its exit code.
type Answer struct {
	Args   []string `json:"args"`
	Output string   `json:"output"`
	Exit   int      `json:"exit"`
}

// Answers is a record of opam's answers for one opam version and one repository
// commit. It is safe for concurrent use.
type Answers struct {
	// OpamVersion and Commit are what the answers hold for: opam's `--version` and the
	// repository commit its root was set up on.
	OpamVersion string
	Commit      string

	mu      sync.Mutex
	entries map[string]Answer
	used    map[string]bool
}

// answersFile is the stored form of Answers: entries sorted by command line.
type answersFile struct {
	OpamVersion string   `json:"opam_version"`
	Commit      string   `json:"commit"`
	Answers     []Answer `json:"answers"`
}

// NewAnswers returns an empty record for opam version v at repository commit commit.
func NewAnswers(v, commit string) *Answers {
	return &Answers{OpamVersion: v, Commit: commit, entries: map[string]Answer{}, used: map[string]bool{}}
}

// AnswersFile returns the name of the record for opam version v and repository commit
// commit in dir.
func AnswersFile(dir, v, commit string) string {
	return filepath.Join(dir, "opam-"+v+"-"+commit+".json.gz")
}

// LoadAnswers reads a record written by Save, checking that it holds the answers of
// opam version v at commit commit.
func LoadAnswers(file, v, commit string) (*Answers, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("opamref: load answers: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("opamref: load answers %s: %w", file, err)
	}
	var af answersFile
	if err := json.NewDecoder(zr).Decode(&af); err != nil {
		return nil, fmt.Errorf("opamref: load answers %s: %w", file, err)
	}
	if af.OpamVersion != v || af.Commit != commit {
		return nil, fmt.Errorf("opamref: load answers %s: they are opam %s's at commit %s, not opam %s's at %s",
			file, af.OpamVersion, af.Commit, v, commit)
	}
	a := NewAnswers(v, commit)
	for _, e := range af.Answers {
		a.entries[answerKey(e.Args)] = e
	}
	return a, nil
}

// Save writes the record to file, compressed, replacing it.
func (a *Answers) Save(file string) error {
	a.mu.Lock()
	af := answersFile{OpamVersion: a.OpamVersion, Commit: a.Commit}
	keys := make([]string, 0, len(a.entries))
	for k := range a.entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		af.Answers = append(af.Answers, a.entries[k])
	}
	a.mu.Unlock()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := json.NewEncoder(zw)
	enc.SetIndent("", " ")
	if err := enc.Encode(af); err != nil {
		return fmt.Errorf("opamref: save answers %s: %w", file, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("opamref: save answers %s: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("opamref: save answers: %w", err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("opamref: save answers: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("opamref: save answers: %w", err)
	}
	return nil
}

// Len returns the number of answers held.
func (a *Answers) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// Merge adds the answers of b that a does not hold.
func (a *Answers) Merge(b *Answers) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, e := range b.entries {
		if _, ok := a.entries[k]; !ok {
			a.entries[k] = e
		}
	}
}

// Unused returns the command lines of the answers that no query asked for since the
// record was loaded or made, sorted.
func (a *Answers) Unused() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var l []string
	for k, e := range a.entries {
		if !a.used[k] {
			l = append(l, strings.Join(e.Args, " "))
		}
	}
	slices.Sort(l)
	return l
}

func (a *Answers) put(e Answer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := answerKey(e.Args)
	a.entries[k] = e
	a.used[k] = true
}

func (a *Answers) get(args []string) (Answer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := answerKey(args)
	e, ok := a.entries[k]
	if ok {
		a.used[k] = true
	}
	return e, ok
}

func answerKey(args []string) string { return strings.Join(args, "\x00") }

// Replay returns an Opam that answers Query and QueryAllowFail from a alone, without
// running opam, for the repository checked out in repoDir (which stands where the
// record says RepoPlaceholder). A question a does not hold fails with ErrNotRecorded.
// Run fails: there is no opam root.
func Replay(a *Answers, repoDir string) *Opam {
	return &Opam{Version: a.OpamVersion, repoDir: repoDir, answers: a}
}

// Record makes Query and QueryAllowFail ask opam every time, bypassing the answer
// cache on disk, and keep each answer in a (with the checkout written as
// RepoPlaceholder), for Save.
func (o *Opam) Record(a *Answers) {
	o.answers, o.record = a, true
}

// generic replaces the checkout with RepoPlaceholder in s.
func (o *Opam) generic(s string) string {
	if o.repoDir == "" {
		return s
	}
	return strings.ReplaceAll(s, o.repoDir, RepoPlaceholder)
}

// specific replaces RepoPlaceholder with the checkout in s.
func (o *Opam) specific(s string) string {
	if o.repoDir == "" {
		return s
	}
	return strings.ReplaceAll(s, RepoPlaceholder, o.repoDir)
}

// replay answers args from the record.
func (o *Opam) replay(mustSucceed bool, args []string) ([]byte, error) {
	gargs := make([]string, len(args))
	for i, s := range args {
		gargs[i] = o.generic(s)
	}
	e, ok := o.answers.get(gargs)
	if !ok {
		return nil, fmt.Errorf("opamref: opam %s: %w for opam %s at commit %s (ask opam again with `go test ./opam/opamref -update`)",
			shortArgs(gargs), ErrNotRecorded, o.answers.OpamVersion, o.answers.Commit)
	}
	if mustSucceed && e.Exit != 0 {
		return nil, fmt.Errorf("opamref: opam %s: recorded exit status %d", shortArgs(gargs), e.Exit)
	}
	return []byte(o.specific(e.Output)), nil
}

// remember keeps opam's answer to args in the record.
func (o *Opam) remember(args []string, out []byte, exit int) {
	gargs := make([]string, len(args))
	for i, s := range args {
		gargs[i] = o.generic(s)
	}
	o.answers.put(Answer{Args: gargs, Output: o.generic(string(out)), Exit: exit})
}

// shortArgs prints a command line, cut after a few words (opam lint takes hundreds of
// files).
func shortArgs(args []string) string {
	if len(args) > 6 {
		return fmt.Sprintf("%s … (%d words)", strings.Join(args[:6], " "), len(args))
	}
	return strings.Join(args, " ")
}
