package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Analyse merges head into base in the git repository gitDir, classifies each changed
// package version (with has_tests) and lints it. What the pull request does wrong is
// in the result's Problems (a failed analysis); the error is for the repository that
// cannot be read. baseRepo, when not nil, is the index of base (it saves loading it).
func Analyse(ctx context.Context, gitDir, base, head string, baseRepo *repository.Repo) (*prdiff.Result, error) {
	res, err := prdiff.Analyse(ctx, gitDir, base, head, baseRepo, prdiff.Options{})
	if errors.Is(err, prdiff.ErrNoMergeBase) {
		return &prdiff.Result{Base: base, Head: head, Problems: []prdiff.Problem{{Reason: prdiff.NoMergeBase,
			Message: "cannot merge into the base branch, please rebase: the branch shares no history with it"}}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("analyse %.12s into %.12s: %w", head, base, err)
	}
	return res, nil
}

// LintReport is the lint of a pull request, file by file.
type LintReport struct {
	Files []LintFile `json:"files"`
	// Errors counts the findings that fail the lint (lint.Finding.BlocksCI),
	// Warnings the others.
	Errors   int `json:"errors"`
	Warnings int `json:"warnings"`
}

// LintFile is the findings about one file, by position.
type LintFile struct {
	File     string         `json:"file"`
	Findings []lint.Finding `json:"findings"`
}

// Lint gathers the lint findings of an analysis by file. Deleted packages are not
// linted.
func Lint(res *prdiff.Result) LintReport {
	var r LintReport
	byFile := map[string]*LintFile{}
	for _, c := range res.Changes {
		if c.Kind == prdiff.Deleted {
			continue
		}
		for _, f := range c.Lint {
			lf := byFile[f.File]
			if lf == nil {
				lf = &LintFile{File: f.File}
				byFile[f.File] = lf
			}
			lf.Findings = append(lf.Findings, f)
			if f.BlocksCI() {
				r.Errors++
			} else {
				r.Warnings++
			}
		}
	}
	for _, lf := range byFile {
		slices.SortStableFunc(lf.Findings, func(a, b lint.Finding) int {
			if a.Pos.Line != b.Pos.Line {
				return int(a.Pos.Line - b.Pos.Line)
			}
			return int(a.Pos.Col - b.Pos.Col)
		})
		r.Files = append(r.Files, *lf)
	}
	slices.SortFunc(r.Files, func(a, b LintFile) int { return strings.Compare(a.File, b.File) })
	return r
}

// Passed reports whether the lint lets the pull request through.
func (r LintReport) Passed() bool { return r.Errors == 0 }

// Summary is the lint status's description.
func (r LintReport) Summary() string {
	switch {
	case r.Errors == 0 && r.Warnings == 0:
		return "passed"
	case r.Errors == 0:
		return fmt.Sprintf("passed with %d warnings", r.Warnings)
	}
	return fmt.Sprintf("%d errors, %d warnings", r.Errors, r.Warnings)
}

// Text is the report as people read it: each file, then its findings with their
// stable rule ids.
func (r LintReport) Text() string {
	var b strings.Builder
	for _, f := range r.Files {
		fmt.Fprintf(&b, "%s\n", f.File)
		for _, x := range f.Findings {
			pos := "-"
			if x.Pos.Line > 0 {
				pos = fmt.Sprintf("%d:%d", x.Pos.Line, x.Pos.Col)
			}
			fmt.Fprintf(&b, "  %-7s %-7s %s: %s\n", pos, x.Severity, x.Rule, x.Message)
		}
	}
	fmt.Fprintf(&b, "lint: %s\n", r.Summary())
	return b.String()
}
