// Package detect judges whether a benchmark metric changed by more than its noise.
//
// A pull request's commit and its base are run interleaved on the same benchmark slot
// in one job (A B A B …), so that the machine's drift hits both alike; the paired
// log-ratios are judged by a t-test with a stated confidence, their variance pooled
// with the noise seen in earlier interleaved runs. A branch's new commit is compared
// with the branch's history: its median against the spread of the medians of earlier
// commits (a prediction interval). Bencher's t-test threshold is here too, as the
// reference the simulation compares with. A change is reported only when its
// confidence interval excludes no change; otherwise the verdict is "no significant
// change".
package detect

import (
	"fmt"
	"math"

	"github.com/kiln-ci/kiln/services/bench/benchfmt"
)

// Method names how a verdict was reached.
type Method string

// The methods.
const (
	MethodInterleaved Method = "interleaved"
	MethodHistory     Method = "history"
	MethodBencher     Method = "bencher-t-test"
)

// Options tune the judgement.
type Options struct {
	// Confidence is the two-sided confidence of the interval (default 0.99).
	Confidence float64
	// MinChange is the smallest relative change reported even when significant
	// (default 0: any change larger than the noise).
	MinChange float64
	// MinHistory is the number of earlier commits a history comparison needs (default 5).
	MinHistory int
}

func (o Options) withDefaults() Options {
	if o.Confidence <= 0 || o.Confidence >= 1 {
		o.Confidence = 0.99
	}
	if o.MinHistory <= 1 {
		o.MinHistory = 5
	}
	return o
}

// Verdict is the judgement of one metric.
type Verdict struct {
	Method Method `json:"method"`
	// Change is the relative change of the new value from the old one (+0.3 is 30 %
	// larger); Low and High bound it at Confidence.
	Change     float64 `json:"change"`
	Low        float64 `json:"low"`
	High       float64 `json:"high"`
	Confidence float64 `json:"confidence"`
	// Significant is set when the interval excludes no change (and MinChange).
	Significant bool `json:"significant"`
	// N is the number of new samples (pairs, for interleaved runs).
	N int `json:"n"`
	// Reason says why no judgement was possible, when it was not.
	Reason string `json:"reason,omitempty"`
}

// Regression reports whether v is a significant change for the worse given the
// metric's trend (larger is worse unless higher is better).
func (v Verdict) Regression(trend benchfmt.Trend) bool {
	if !v.Significant {
		return false
	}
	if trend == benchfmt.HigherIsBetter {
		return v.Change < 0
	}
	return v.Change > 0
}

// Improvement reports whether v is a significant change for the better.
func (v Verdict) Improvement(trend benchfmt.Trend) bool {
	return v.Significant && !v.Regression(trend)
}

func (v Verdict) String() string {
	switch {
	case v.Reason != "":
		return "not judged: " + v.Reason
	case v.Significant:
		return fmt.Sprintf("%+.1f %% (%+.1f %% to %+.1f %% at %g %% confidence)", 100*v.Change, 100*v.Low, 100*v.High, 100*v.Confidence)
	}
	return fmt.Sprintf("no significant change (%+.1f %%, %+.1f %% to %+.1f %% at %g %% confidence)", 100*v.Change, 100*v.Low, 100*v.High, 100*v.Confidence)
}

// Noise is the variance of the paired log-ratio ln(b/a) of interleaved runs of the
// same code in an environment, with its degrees of freedom.
type Noise struct {
	Var float64 `json:"var"`
	DF  int     `json:"df"`
}

// PairNoise estimates Noise from earlier interleaved runs' paired log-ratios. It is
// their plain variance: a machine's noise has heavy tails (a pair disturbed by another
// process), which a robust scale would leave out and so raise false alarms.
func PairNoise(ratios []float64) Noise {
	if len(ratios) < 2 {
		return Noise{}
	}
	_, v := meanVar(ratios)
	return Noise{Var: v, DF: len(ratios) - 1}
}

// LogRatios are the paired ln(head/base) of an interleaved run.
func LogRatios(base, head []float64) []float64 {
	n := min(len(base), len(head))
	out := make([]float64, n)
	for i := range n {
		out[i] = math.Log(head[i] / base[i])
	}
	return out
}

func positive(xs []float64) bool {
	for _, x := range xs {
		if !(x > 0) || math.IsInf(x, 0) {
			return false
		}
	}
	return len(xs) > 0
}

// Interleaved judges head against base, timed alternately on one slot (base[i] just
// before head[i]), with prior noise from earlier interleaved runs.
func Interleaved(base, head []float64, prior Noise, o Options) Verdict {
	o = o.withDefaults()
	v := Verdict{Method: MethodInterleaved, Confidence: o.Confidence, N: min(len(base), len(head))}
	if len(base) != len(head) {
		v.Reason = fmt.Sprintf("%d base samples for %d head samples: not paired", len(base), len(head))
		return v
	}
	if !positive(base) || !positive(head) {
		v.Reason = "a sample is not a positive number"
		return v
	}
	d := LogRatios(base, head)
	mean, variance := meanVar(d)
	// From 3 pairs on, the median of the ratios: a disturbed pair moves it little. Its
	// standard error is taken as the normal case's, 1.2533 σ/√n, which overstates it
	// for heavy-tailed noise: the stated confidence is then a lower bound.
	seFactor := 1.0
	if len(d) >= 3 {
		mean, seFactor = median(d), 1.2533
	}
	df := float64(len(d) - 1)
	if prior.DF > 0 {
		variance = (df*variance + float64(prior.DF)*prior.Var) / (df + float64(prior.DF))
		df += float64(prior.DF)
	}
	if df < 1 {
		v.Reason = "one pair and no noise measured before: repeat the benchmark"
		v.Change = math.Expm1(mean)
		return v
	}
	return judge(v, mean, seFactor*math.Sqrt(variance/float64(len(d))), df, o)
}

// judge fills v from the estimated log change, its standard error and degrees of
// freedom.
func judge(v Verdict, mean, se, df float64, o Options) Verdict {
	q := tQuantile(1-(1-o.Confidence)/2, df)
	v.Change, v.Low, v.High = math.Expm1(mean), math.Expm1(mean-q*se), math.Expm1(mean+q*se)
	v.Significant = v.Low > o.MinChange || v.High < -o.MinChange
	return v
}

// History judges cur (the repeats of a new commit) against hist (the repeats of each
// earlier commit of the branch): the median of cur against a prediction interval from
// the earlier commits' medians, on a log scale.
func History(hist [][]float64, cur []float64, o Options) Verdict {
	o = o.withDefaults()
	v := Verdict{Method: MethodHistory, Confidence: o.Confidence, N: len(cur)}
	if len(hist) < o.MinHistory {
		v.Reason = fmt.Sprintf("%d earlier commits, %d needed", len(hist), o.MinHistory)
		return v
	}
	if !positive(cur) {
		v.Reason = "a sample is not a positive number"
		return v
	}
	meds := make([]float64, 0, len(hist))
	for _, h := range hist {
		if positive(h) {
			meds = append(meds, median(logs(h)))
		}
	}
	if len(meds) < o.MinHistory {
		v.Reason = fmt.Sprintf("%d usable earlier commits, %d needed", len(meds), o.MinHistory)
		return v
	}
	mean, variance := meanVar(meds)
	se := math.Sqrt(variance * (1 + 1/float64(len(meds))))
	return judge(v, median(logs(cur))-mean, se, float64(len(meds)-1), o)
}

// Bencher applies Bencher's t-test threshold: the new value (the mean of cur) against
// the mean and standard deviation of the earlier commits' values, with boundaries
// mean ± t(boundary, n-1)·sd (Bencher's upper and lower boundary, default 0.99). The
// verdict's interval is the boundaries, relative to the mean.
func Bencher(hist [][]float64, cur []float64, boundary float64) Verdict {
	if boundary <= 0 || boundary >= 1 {
		boundary = 0.99
	}
	v := Verdict{Method: MethodBencher, Confidence: boundary, N: len(cur)}
	if len(hist) < 2 || len(cur) == 0 {
		v.Reason = fmt.Sprintf("%d earlier commits, 2 needed", len(hist))
		return v
	}
	vals := make([]float64, len(hist))
	for i, h := range hist {
		vals[i], _ = meanVar(h)
	}
	mean, variance := meanVar(vals)
	x, _ := meanVar(cur)
	limit := tQuantile(boundary, float64(len(vals)-1)) * math.Sqrt(variance)
	v.Change = (x - mean) / mean
	v.Low, v.High = -limit/mean, limit/mean
	v.Significant = x > mean+limit || x < mean-limit
	return v
}
