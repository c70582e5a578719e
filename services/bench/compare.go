package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// Row is one metric of a comparison: the run's value against its base.
type Row struct {
	Key         store.Key      `json:"key"`
	Group       string         `json:"group"`
	Units       string         `json:"units,omitempty"`
	Trend       benchfmt.Trend `json:"trend,omitempty"`
	Value       float64        `json:"value"`
	Base        float64        `json:"base"`
	HasBase     bool           `json:"has_base"`
	Verdict     detect.Verdict `json:"verdict"`
	Regression  bool           `json:"regression"`
	Improvement bool           `json:"improvement"`
	// Log and BaseLog are the console's addresses of the job log lines that printed
	// the value and the base's ("" when not known).
	Log     string `json:"log,omitempty"`
	BaseLog string `json:"base_log,omitempty"`
}

// Comparison is a run's metrics judged against its base: for a PR run interleaved
// with its base, the base's samples of the same job; otherwise the history of the
// branch (the PR's target branch, or the run's own branch before it).
type Comparison struct {
	Run        store.Run `json:"run"`
	Against    string    `json:"against"` // what the base is, in words
	Rows       []Row     `json:"rows"`
	Confidence float64   `json:"confidence"`
}

// Significant counts the rows with a significant regression and improvement.
func (c Comparison) Significant() (regressions, improvements int) {
	for _, r := range c.Rows {
		if r.Regression {
			regressions++
		}
		if r.Improvement {
			improvements++
		}
	}
	return regressions, improvements
}

// History is how many earlier commits a history comparison reads.
const History = 20

// Compare judges run's metrics. target is the branch a PR run is compared with when it
// was not interleaved with its base (usually main).
func Compare(ctx context.Context, st *store.Store, run store.Run, target string, o detect.Options) (Comparison, error) {
	c := Comparison{Run: run, Confidence: o.Confidence}
	if c.Confidence == 0 {
		c.Confidence = 0.99
	}
	pts, err := st.RunPoints(ctx, run.ID)
	if err != nil {
		return c, err
	}
	head := map[store.Key]store.Point{}
	base := map[store.Key]store.Point{}
	var keys []store.Key
	for _, p := range pts {
		if p.Arm == store.Base {
			base[p.Key] = p
		} else {
			head[p.Key] = p
			keys = append(keys, p.Key)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	interleaved := len(base) > 0
	branch := run.Branch
	if run.PR > 0 {
		branch = target
	}
	var hist map[store.Key][][]float64
	var histCentral map[store.Key]float64
	if interleaved {
		c.Against = fmt.Sprintf("base %s, run interleaved in the same job", short(run.Base))
	} else {
		c.Against = fmt.Sprintf("the last %d runs of %s", History, branch)
		hist, histCentral, err = history(ctx, st, run, branch, keys)
		if err != nil {
			return c, err
		}
	}
	prior, err := priorNoise(ctx, st, run, keys)
	if err != nil {
		return c, err
	}
	for _, k := range keys {
		h := head[k]
		row := Row{Key: k, Group: benchfmt.Metric{Name: k.Name}.Group(), Units: h.Units, Trend: h.Trend, Value: h.Central, Log: logURL(h)}
		if interleaved {
			b, ok := base[k]
			if ok {
				row.Base, row.HasBase, row.BaseLog = b.Central, true, logURL(b)
				row.Verdict = detect.Interleaved(b.Value.Points(), h.Value.Points(), prior[k], o)
			} else {
				row.Verdict = detect.Verdict{Method: detect.MethodInterleaved, Reason: "the base printed no such metric"}
			}
		} else {
			row.Base, row.HasBase = histCentral[k], len(hist[k]) > 0
			row.Verdict = detect.History(hist[k], h.Value.Points(), o)
		}
		row.Regression = row.Verdict.Regression(h.Trend)
		row.Improvement = row.Verdict.Improvement(h.Trend)
		c.Rows = append(c.Rows, row)
	}
	return c, nil
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// history reads the earlier passed runs of branch before run, per metric.
func history(ctx context.Context, st *store.Store, run store.Run, branch string, keys []store.Key) (map[store.Key][][]float64, map[store.Key]float64, error) {
	f := store.Filter{Repo: run.Repo, Branch: branch, Env: run.Env, PR: -1, Limit: History + 1}
	if !run.CommitTime.IsZero() {
		f.To = run.CommitTime
	}
	pts, err := st.Series(ctx, f, keys...)
	if err != nil {
		return nil, nil, err
	}
	hist := map[store.Key][][]float64{}
	central := map[store.Key]float64{}
	for _, p := range pts {
		if p.RunID == run.ID || p.Arm != store.Head || p.Commit == run.Commit {
			continue
		}
		hist[p.Key] = append(hist[p.Key], p.Value.Points())
		central[p.Key] = p.Central // the latest
	}
	for k, h := range hist {
		if len(h) > History {
			hist[k] = h[len(h)-History:]
		}
	}
	return hist, central, nil
}

// priorNoise is the noise of the interleaved pairs of earlier runs in run's
// environment, per metric.
func priorNoise(ctx context.Context, st *store.Store, run store.Run, keys []store.Key) (map[store.Key]detect.Noise, error) {
	pts, err := st.Series(ctx, store.Filter{Repo: run.Repo, Env: run.Env, Limit: History + 1}, keys...)
	if err != nil {
		return nil, err
	}
	type pair struct{ base, head []float64 }
	byRun := map[int64]map[store.Key]*pair{}
	for _, p := range pts {
		if p.RunID == run.ID {
			continue
		}
		if byRun[p.RunID] == nil {
			byRun[p.RunID] = map[store.Key]*pair{}
		}
		pr := byRun[p.RunID][p.Key]
		if pr == nil {
			pr = &pair{}
			byRun[p.RunID][p.Key] = pr
		}
		if p.Arm == store.Base {
			pr.base = p.Value.Points()
		} else {
			pr.head = p.Value.Points()
		}
	}
	ratios := map[store.Key][]float64{}
	for _, m := range byRun {
		for k, pr := range m {
			if len(pr.base) > 0 && len(pr.base) == len(pr.head) {
				ratios[k] = append(ratios[k], detect.LogRatios(pr.base, pr.head)...)
			}
		}
	}
	out := map[store.Key]detect.Noise{}
	for k, r := range ratios {
		out[k] = detect.PairNoise(r)
	}
	return out, nil
}

// CommentMarker identifies the service's comment on a PR, which is edited in place.
const CommentMarker = "<!-- kiln-bench -->"

// Comment is the PR comment for comparisons (one per environment): the significant
// changes only, or "no significant change".
func Comment(cs []Comparison, link string) string {
	var b strings.Builder
	b.WriteString(CommentMarker + "\n### Benchmarks\n\n")
	for _, c := range cs {
		env := c.Run.Env
		if env == "" {
			env = "default"
		}
		reg, imp := c.Significant()
		fmt.Fprintf(&b, "**%s** (commit %s against %s, %g %% confidence): ", env, short(c.Run.Commit), c.Against, 100*c.Confidence)
		if reg+imp == 0 {
			fmt.Fprintf(&b, "no significant change in %d metrics.\n\n", len(c.Rows))
			continue
		}
		fmt.Fprintf(&b, "%d regressions, %d improvements, %d metrics unchanged.\n\n", reg, imp, len(c.Rows)-reg-imp)
		b.WriteString("| metric | PR | base | change | |\n|---|---|---|---|---|\n")
		for _, r := range c.Rows {
			if !r.Regression && !r.Improvement {
				continue
			}
			what := "improvement"
			if r.Regression {
				what = "**regression**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %+.1f %% | %s |\n", r.Key, value(r.Value, r.Units), value(r.Base, r.Units), 100*r.Verdict.Change, what)
		}
		b.WriteString("\n")
	}
	if link != "" {
		fmt.Fprintf(&b, "[All metrics](%s)\n", link)
	}
	return b.String()
}

func value(x float64, units string) string {
	if units == "" {
		return fmt.Sprintf("%.4g", x)
	}
	return fmt.Sprintf("%.4g %s", x, units)
}

// Status is the commit status of one environment's comparison: failed on a
// significant regression, passed otherwise.
func Status(c Comparison) forge.Status {
	reg, imp := c.Significant()
	st := forge.Status{State: forge.Passed, Title: "no significant change"}
	if reg+imp > 0 {
		st.Title = fmt.Sprintf("%d regressions, %d improvements", reg, imp)
	}
	if reg > 0 {
		st.State = forge.Failed
		var names []string
		for _, r := range c.Rows {
			if r.Regression {
				names = append(names, fmt.Sprintf("%s %+.1f %%", r.Key, 100*r.Verdict.Change))
			}
		}
		st.Title = fmt.Sprintf("%d regressions: %s", reg, strings.Join(names, ", "))
	}
	return st
}
