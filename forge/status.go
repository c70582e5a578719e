// Package forge holds what every forge (GitHub, Gitea, Forgejo) shows of one commit's CI
// result: the variants built and their state, summarised as one status with a title and
// a Markdown text that lists the variants and, for failures, the failing log lines.
package forge

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// State is the state of one variant's job, or of a whole commit.
type State string

// The states a job or commit can be in.
const (
	Queued    State = "queued"
	Running   State = "running"
	Passed    State = "passed"
	Failed    State = "failed"
	Cancelled State = "cancelled"
	Skipped   State = "skipped"
	// Error is a failure that is not the commit's fault (infrastructure).
	Error State = "error"
)

// Variant is one job of a commit (a platform build, a lint) as the forge shows it.
type Variant struct {
	Name         string        // e.g. "debian-13-5.3_amd64" or "(lint-fmt)"
	State        State         // its state
	Experimental bool          // a failure does not fail the commit
	Duration     time.Duration // run time, when finished
	URL          string        // the job's page, when known
	Message      string        // a one-line reason (a failure's cause), optional
	FailingLines []string      // the log lines that explain a failure
}

// Status is the summary of a commit for a forge.
type Status struct {
	State   State  // the commit's overall state
	Title   string // one line, e.g. "2 failed, 5 passed"
	Summary string // Markdown: a table of the variants and the failing lines
}

// Limits of what a forge accepts, applied by Summarise.
const (
	maxSummary      = 60000 // GitHub allows 65535 characters in a check run's summary
	maxLinesPerFail = 20
)

// Summarise turns the variants of one commit into its status: failed when any
// non-experimental variant failed, running while any is queued or running, error when
// one could not run for reasons not the commit's own, cancelled when one was cancelled
// (the commit was superseded), passed otherwise.
func Summarise(variants []Variant) Status {
	vs := slices.Clone(variants)
	slices.SortStableFunc(vs, func(a, b Variant) int { return strings.Compare(a.Name, b.Name) })
	counts := map[State]int{}
	var failed, errored, cancelled, active bool
	for _, v := range vs {
		counts[v.State]++
		switch v.State {
		case Failed:
			failed = failed || !v.Experimental
		case Error:
			errored = errored || !v.Experimental
		case Cancelled:
			cancelled = cancelled || !v.Experimental
		case Queued, Running:
			active = true
		}
	}
	st := Status{State: Passed}
	switch {
	case len(vs) == 0:
		st.State = Queued
	case failed:
		st.State = Failed
	case active:
		st.State = Running
	case errored:
		st.State = Error
	case cancelled:
		st.State = Cancelled
	}
	var parts []string
	for _, s := range []State{Failed, Error, Running, Queued, Passed, Cancelled, Skipped} {
		if n := counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(parts) == 0 {
		st.Title = "no jobs yet"
	} else {
		st.Title = strings.Join(parts, ", ")
	}

	var b strings.Builder
	b.WriteString("| Variant | Status | Time |\n|---|---|---|\n")
	for _, v := range vs {
		name := mdEscape(v.Name)
		if v.URL != "" {
			name = "[" + name + "](" + v.URL + ")"
		}
		state := string(v.State)
		if v.Experimental {
			state += " (experimental)"
		}
		if v.State == Queued && v.Message != "" {
			state += ": " + mdEscape(v.Message) // why it waits
		}
		dur := ""
		if v.Duration > 0 {
			dur = v.Duration.Round(time.Second).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, state, dur)
	}
	for _, v := range vs {
		if v.State != Failed && v.State != Error {
			continue
		}
		fmt.Fprintf(&b, "\n### %s\n", mdEscape(v.Name))
		if v.Message != "" {
			fmt.Fprintf(&b, "%s\n", mdEscape(v.Message))
		}
		lines := v.FailingLines
		if len(lines) > maxLinesPerFail {
			lines = lines[:maxLinesPerFail]
		}
		if len(lines) > 0 {
			b.WriteString("\n```\n")
			for _, l := range lines {
				b.WriteString(strings.ReplaceAll(l, "```", "'''"))
				b.WriteByte('\n')
			}
			b.WriteString("```\n")
		}
	}
	st.Summary = b.String()
	if len(st.Summary) > maxSummary {
		cut := st.Summary[:maxSummary]
		if strings.Count(cut, "```")%2 == 1 {
			cut += "\n```"
		}
		st.Summary = cut + "\n\n… (truncated)\n"
	}
	return st
}

// Short is a one-line description of at most n bytes, for forges whose statuses carry no
// text (Gitea's description): the title, then the first failing variant and its failing
// lines, joined by " / ", as many as fit.
func (s Status) Short(variants []Variant, n int) string {
	d := s.Title
	for _, v := range variants {
		if (v.State == Failed || v.State == Error) && !v.Experimental {
			d += "; " + v.Name
			var lines []string
			for _, l := range v.FailingLines {
				if l = strings.TrimSpace(l); strings.Trim(l, "^ ") != "" {
					lines = append(lines, l)
				}
			}
			if len(lines) > 0 {
				d += ": " + strings.Join(lines, " / ")
			} else if v.Message != "" {
				d += ": " + v.Message
			}
			return Truncate(d, n)
		}
	}
	if s.State == Cancelled {
		for _, v := range variants {
			if v.State == Cancelled && v.Message != "" {
				d += "; " + v.Message
				break
			}
		}
	}
	return Truncate(d, n)
}

// Truncate shortens s to at most n bytes, cutting on a character boundary and ending
// with "…" when it cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	if n < len(ell) {
		return ""
	}
	cut := n - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}
