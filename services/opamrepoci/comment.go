package opamrepoci

import (
	"fmt"
	"strings"

	"github.com/kiln-ci/kiln/forge"
)

// CommentMarker finds the service's comment on a pull request again.
var CommentMarker = forge.CommentMarker("opam-repo-ci")

// maxCommentLines bounds the failing lines quoted per job, maxComment the comment.
const (
	maxCommentLines = 20
	maxComment      = 60000
)

// Report is what the service says of a pull request's head: its plan, its jobs'
// outcomes and their tally.
type Report struct {
	PR       PR        `json:"pr"`
	Plan     *Plan     `json:"plan,omitempty"`
	Outcomes []Outcome `json:"outcomes,omitempty"`
	// Analysis is set when the analysis (fetch, merge, plan) failed or is not done.
	Analysis *Outcome `json:"analysis,omitempty"`
	URL      string   `json:"url,omitempty"` // the head's page
}

// Counts tallies the report's jobs.
func (r Report) Counts() Counts {
	skipped := 0
	if r.Plan != nil {
		skipped = len(r.Plan.Skipped)
	}
	return Count(r.Outcomes, skipped)
}

// Status is the "opam-ci" status: the jobs' tally, failing on the pull request's own
// failures only.
func (r Report) Status() (forge.Status, []forge.Variant) {
	if a := r.Analysis; a != nil {
		st := forge.Status{State: a.State, Title: "analysis: " + string(a.State)}
		if a.Message != "" {
			st.Title = a.Message
		}
		st.Summary = st.Title + "\n"
		return st, []forge.Variant{{Name: "(analysis)", State: a.State, Message: a.Message, FailingLines: a.Lines, URL: r.URL}}
	}
	c := r.Counts()
	st := forge.Status{State: c.State(), Title: c.Title()}
	vs := r.Variants()
	st.Summary = r.errors(false)
	return st, vs
}

// Variants are the jobs as the index and the forges see them: a failure that is not
// the pull request's own (it happens on master too, or the package accepts it) does
// not fail the commit.
func (r Report) Variants() []forge.Variant {
	vs := make([]forge.Variant, 0, len(r.Outcomes))
	for _, o := range r.Outcomes {
		v := forge.Variant{Name: o.Job.ID(), State: o.State, URL: o.URL, FailingLines: o.Lines, Message: o.Message,
			Experimental: o.Job.AcceptFailure || o.Verdict == BaseFailure}
		if o.State == forge.Failed {
			v.Message = failureMessage(o)
		}
		vs = append(vs, v)
	}
	return vs
}

// failureMessage is a failure's verdict, then its failing lines.
func failureMessage(o Outcome) string {
	label := o.Verdict.Label()
	if o.Job.AcceptFailure {
		label = "failure accepted (x-ci-accept-failures)"
	}
	msg := label
	lines := o.Lines
	if len(lines) == 0 && o.Message != "" {
		lines = []string{o.Message}
	}
	if len(lines) > maxCommentLines {
		lines = lines[:maxCommentLines]
	}
	if len(lines) > 0 {
		msg += "\n" + strings.Join(lines, "\n")
	}
	return msg
}

// LintStatus is the "opam-repo-ci (linter)" status.
func (r Report) LintStatus() (forge.Status, []forge.Variant) {
	if r.Plan == nil {
		st := forge.Queued
		if r.Analysis != nil && r.Analysis.State != forge.Running && r.Analysis.State != forge.Queued {
			st = r.Analysis.State
		}
		return forge.Status{State: st, Title: "lint: waiting for the analysis"}, nil
	}
	l := r.Plan.Lint
	st := forge.Status{State: forge.Passed, Title: "lint " + l.Summary(), Summary: "```\n" + l.Text() + "```\n"}
	var vs []forge.Variant
	for _, f := range l.Files {
		v := forge.Variant{Name: f.File, State: forge.Passed}
		for _, x := range f.Findings {
			if x.BlocksCI() {
				v.State = forge.Failed
				v.FailingLines = append(v.FailingLines, fmt.Sprintf("%s: %s", x.Rule, x.Message))
			}
		}
		vs = append(vs, v)
	}
	if !l.Passed() {
		st.State = forge.Failed
	}
	return st, vs
}

// Final reports whether nothing more will change the report (short of a rebuild).
func (r Report) Final() bool {
	if r.Analysis != nil {
		return r.Analysis.State != forge.Queued && r.Analysis.State != forge.Running
	}
	return r.Counts().Pending == 0
}

// Comment is the pull request's comment: the tally, the lint, then the summary of
// errors, new ones first, with their failing lines.
func (r Report) Comment() string {
	var b strings.Builder
	b.WriteString(CommentMarker + "\n")
	st, _ := r.Status()
	fmt.Fprintf(&b, "### opam-ci: %s\n\n", mdText(st.Title))
	if r.URL != "" {
		fmt.Fprintf(&b, "Jobs, logs and the commands to reproduce them: %s\n\n", r.URL)
	}
	if r.Plan != nil {
		ls, _ := r.LintStatus()
		fmt.Fprintf(&b, "**Lint:** %s\n\n", mdText(strings.TrimPrefix(ls.Title, "lint ")))
		if !r.Plan.Lint.Passed() {
			b.WriteString(ls.Summary + "\n")
		}
	}
	if a := r.Analysis; a != nil && a.State == forge.Failed {
		b.WriteString("#### The pull request cannot be tested as it stands\n\n")
		writeLines(&b, append([]string{a.Message}, a.Lines...))
	}
	b.WriteString(r.errors(true))
	out := b.String()
	if len(out) > maxComment {
		out = out[:maxComment]
		if strings.Count(out, "```")%2 == 1 {
			out += "\n```"
		}
		out += "\n\n… (cut; the full summary is on the page above)\n"
	}
	return out
}

// errors is the summary of errors in Markdown: the new failures, then those that
// happen on master too, then the accepted ones; with the job pages' links when links
// is set (the status's own summary has them in its table).
func (r Report) errors(links bool) string {
	var b strings.Builder
	for _, sec := range []struct {
		title string
		keep  func(Outcome) bool
	}{
		{"New in this PR", func(o Outcome) bool { return o.Verdict == NewFailure && !o.Job.AcceptFailure }},
		{"Also failing on master (not counted)", func(o Outcome) bool { return o.Verdict == BaseFailure && !o.Job.AcceptFailure }},
		{"Failures accepted (x-ci-accept-failures)", func(o Outcome) bool { return o.Job.AcceptFailure }},
		{"Still being compared with master", func(o Outcome) bool { return o.Verdict == Comparing && !o.Job.AcceptFailure }},
	} {
		var list []Outcome
		for _, o := range r.Outcomes {
			if o.State == forge.Failed && sec.keep(o) {
				list = append(list, o)
			}
		}
		if len(list) == 0 {
			continue
		}
		fmt.Fprintf(&b, "#### %s\n\n", sec.title)
		for _, o := range list {
			name := "`" + o.Job.ID() + "`"
			if links && o.URL != "" {
				name = "[" + name + "](" + o.URL + ")"
			}
			fmt.Fprintf(&b, "- %s\n", name)
			lines := o.Lines
			if len(lines) == 0 && o.Message != "" {
				lines = []string{o.Message}
			}
			writeLines(&b, lines)
		}
	}
	return b.String()
}

func writeLines(b *strings.Builder, lines []string) {
	if len(lines) > maxCommentLines {
		lines = append(lines[:maxCommentLines:maxCommentLines], "…")
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("\n  ```\n")
	for _, l := range lines {
		fmt.Fprintf(b, "  %s\n", strings.ReplaceAll(l, "```", "'''"))
	}
	b.WriteString("  ```\n\n")
}

// mdText keeps text from being read as Markdown or HTML.
func mdText(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;", "\n", " ").Replace(s)
}
