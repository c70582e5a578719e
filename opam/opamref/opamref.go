// Package opamref runs the real opam binary, offline, against a local copy of an opam
// repository, so kiln's answers (version order, lint, installability, reverse
// dependencies) can be checked against opam's. Answers are cached on disk by opam
// version, repository commit and command line, since opam takes seconds to minutes
// per query; they can also be recorded (Record, Answers.Save) and replayed without
// opam (Replay), which is how kiln's agreement tests run by default.
package opamref

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Opam is an opam root set up on one repository commit, with an empty switch.
type Opam struct {
	Bin     string
	Version string
	Root    string
	cache   string

	repoDir string   // the checkout, written as RepoPlaceholder in recorded answers
	answers *Answers // where answers are recorded into or replayed from, if anywhere
	record  bool     // true: ask opam and record; false: replay from answers
}

// Binary returns the path of the opam command and its version.
func Binary(ctx context.Context) (bin, version string, err error) {
	bin, err = exec.LookPath("opam")
	if err != nil {
		return "", "", fmt.Errorf("opamref: %w", err)
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("opamref: opam --version: %w", err)
	}
	return bin, strings.TrimSpace(string(out)), nil
}

// Setup prepares (or reuses) an opam root under cacheDir for the repository checked
// out in repoDir at commit: `opam init --bare` on the directory, then an empty switch.
func Setup(ctx context.Context, cacheDir, repoDir, commit string) (*Opam, error) {
	bin, ver, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	base := filepath.Join(cacheDir, "opam-"+ver+"-"+commit)
	o := &Opam{Bin: bin, Version: ver, Root: filepath.Join(base, "root"), cache: filepath.Join(base, "answers"), repoDir: repoDir}
	if _, err := os.Stat(filepath.Join(base, "ready")); err == nil {
		return o, nil
	}
	os.RemoveAll(base)
	if err := os.MkdirAll(o.cache, 0o755); err != nil {
		return nil, err
	}
	if _, err := o.run(ctx, "init", "--bare", "--no-setup", "--disable-sandboxing", "default", repoDir); err != nil {
		return nil, err
	}
	if _, err := o.run(ctx, "switch", "create", "empty", "--empty"); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(base, "ready"), nil, 0o644); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Opam) run(ctx context.Context, args ...string) ([]byte, error) {
	if o.Bin == "" {
		return nil, fmt.Errorf("opamref: opam %s: answers are replayed, there is no opam root to run opam in", shortArgs(args))
	}
	cmd := exec.CommandContext(ctx, o.Bin, args...)
	cmd.Env = append(os.Environ(), "OPAMROOT="+o.Root, "OPAMYES=1", "OPAMCOLOR=never",
		"OPAMROOTISOK=1", "OPAMSWITCH=empty", "OPAMNODEPEXTS=1", "OPAMDOWNLOADJOBS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("opam %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Run runs opam with args in the root, without the answer cache (for timing).
func (o *Opam) Run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	if dir == "" || o.Bin == "" {
		return o.run(ctx, args...)
	}
	cmd := exec.CommandContext(ctx, o.Bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPAMROOT="+o.Root, "OPAMYES=1", "OPAMCOLOR=never", "OPAMROOTISOK=1", "OPAMSWITCH=empty")
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("opam %s in %s: %w", strings.Join(args, " "), dir, err)
	}
	return out, nil
}

// Query runs opam with args and returns its standard output, from the answer cache
// when this command line was run before. Failures are not cached. An Opam made by
// Replay answers from its record; one given a record by Record asks opam and records.
func (o *Opam) Query(ctx context.Context, args ...string) ([]byte, error) {
	return o.query(ctx, true, args...)
}

// QueryAllowFail is Query for commands whose non-zero exit is an answer (opam lint):
// the output and the exit code are cached together.
func (o *Opam) QueryAllowFail(ctx context.Context, args ...string) ([]byte, error) {
	return o.query(ctx, false, args...)
}

func (o *Opam) query(ctx context.Context, mustSucceed bool, args ...string) ([]byte, error) {
	if o.answers != nil && !o.record {
		return o.replay(mustSucceed, args)
	}
	h := sha256.Sum256([]byte(strings.Join(args, "\x00")))
	file := filepath.Join(o.cache, hex.EncodeToString(h[:12]))
	if o.answers == nil {
		if data, err := os.ReadFile(file); err == nil {
			return data, nil
		}
	}
	out, err := o.run(ctx, args...)
	exitCode := 0
	if err != nil {
		if mustSucceed || ctx.Err() != nil {
			return nil, err
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return nil, err
		}
		exitCode = exit.ExitCode()
	}
	if o.answers != nil {
		o.remember(args, out, exitCode)
	}
	tmp := file + ".tmp"
	if werr := os.WriteFile(tmp, out, 0o644); werr == nil {
		os.Rename(tmp, file)
	}
	return out, nil
}

// Lines splits opam's output into its non-empty lines.
func Lines(out []byte) []string {
	var l []string
	for _, s := range strings.Split(string(out), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			l = append(l, s)
		}
	}
	return l
}

// RevdepsArgs is the command line opam-repository CI uses for reverse dependencies.
func RevdepsArgs(pkg string, recursive, depopts, withTest bool) []string {
	args := []string{"list", "-s", "--color=never", "--depends-on", pkg, "--coinstallable-with", pkg, "--all-versions"}
	if recursive {
		args = append(args, "--recursive")
	}
	if depopts {
		args = append(args, "--depopts")
	}
	if withTest {
		args = append(args, "--with-test")
	}
	return args
}
