package detect

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// SimOptions say how to simulate the detectors on recorded noise.
type SimOptions struct {
	// Repeats are the numbers of repeats compared (default 1, 3, 10).
	Repeats []int
	// History is the number of earlier commits a history comparison sees (default 20).
	History int
	// Trials is the number of simulated commits per cell (default 1000).
	Trials int
	// Options are the detector's (confidence 0.99 by default).
	Options Options
	// Boundary is Bencher's t-test boundary (default 0.99).
	Boundary float64
	// Deltas are the regressions tried, relative (default 0.25 % to 1000 %).
	Deltas []float64
	Seed   uint64
}

func (o SimOptions) withDefaults() SimOptions {
	if len(o.Repeats) == 0 {
		o.Repeats = []int{1, 3, 10}
	}
	if o.History <= 0 {
		o.History = 20
	}
	if o.Trials <= 0 {
		o.Trials = 1000
	}
	if o.Boundary <= 0 {
		o.Boundary = 0.99
	}
	if len(o.Deltas) == 0 {
		o.Deltas = []float64{0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10}
	}
	o.Options = o.Options.withDefaults()
	return o
}

// SimRow is one method's figures at one number of repeats.
type SimRow struct {
	Method  Method `json:"method"`
	Repeats int    `json:"repeats"`
	// FalseAlarms is the number of significant changes reported per 100 commits that
	// changed nothing.
	FalseAlarms float64 `json:"false_alarms_per_100"`
	// Smallest is the smallest regression tried that is detected in at least 95 % of
	// the commits with it (and every larger one is); NaN when none is.
	Smallest float64 `json:"smallest_detected_95"`
	Trials   int     `json:"trials"`
}

// trial is where one simulated commit takes its samples: the burst it runs in
// (the earlier bursts are its history) and the offset of its samples in the burst.
type trial struct{ burst, off int }

// Simulate runs each method on the recording: a simulated commit is a burst of the
// recording (its samples, multiplied by 1+delta for a regressed commit), its history
// the bursts before it. Interleaved runs take alternate samples of the burst as base
// and head; their prior noise comes from the same pairing in the earlier bursts.
func Simulate(rec *Recording, o SimOptions) ([]SimRow, error) {
	o = o.withDefaults()
	if len(rec.Bursts) <= o.History {
		return nil, fmt.Errorf("simulate: %d bursts recorded, more than the history of %d needed", len(rec.Bursts), o.History)
	}
	size := len(rec.Bursts[0])
	for _, b := range rec.Bursts {
		size = min(size, len(b))
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6b696c6e))
	var rows []SimRow
	for _, n := range o.Repeats {
		if 2*n > size {
			return nil, fmt.Errorf("simulate: %d repeats interleaved need bursts of %d samples, the recording has %d", n, 2*n, size)
		}
		trials := make([]trial, o.Trials)
		for i := range trials {
			trials[i] = trial{o.History + rng.IntN(len(rec.Bursts)-o.History), rng.IntN(size - 2*n + 1)}
		}
		for _, m := range []Method{MethodInterleaved, MethodHistory, MethodBencher} {
			row := SimRow{Method: m, Repeats: n, Trials: o.Trials, Smallest: math.NaN()}
			verdicts := func(delta float64) (alarms, regressions int) {
				for _, tr := range trials {
					v := simulate(rec, o, m, n, tr, delta)
					if v.Significant {
						alarms++
						if v.Change > 0 {
							regressions++
						}
					}
				}
				return alarms, regressions
			}
			alarms, _ := verdicts(0)
			row.FalseAlarms = 100 * float64(alarms) / float64(o.Trials)
			for i := len(o.Deltas) - 1; i >= 0; i-- {
				if _, hits := verdicts(o.Deltas[i]); float64(hits) < 0.95*float64(o.Trials) {
					break
				}
				row.Smallest = o.Deltas[i]
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func scaled(xs []float64, f float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * f
	}
	return out
}

// alternate splits 2n consecutive samples into the A (even) and B (odd) ones.
func alternate(xs []float64) (a, b []float64) {
	for i := 0; i+1 < len(xs); i += 2 {
		a, b = append(a, xs[i]), append(b, xs[i+1])
	}
	return a, b
}

func simulate(rec *Recording, o SimOptions, m Method, n int, tr trial, delta float64) Verdict {
	if m == MethodInterleaved {
		var ratios []float64
		for k := tr.burst - o.History; k < tr.burst; k++ {
			ratios = append(ratios, LogRatios(alternate(rec.Bursts[k][tr.off:tr.off+2*n]))...)
		}
		base, head := alternate(rec.Bursts[tr.burst][tr.off : tr.off+2*n])
		return Interleaved(base, scaled(head, 1+delta), PairNoise(ratios), o.Options)
	}
	hist := make([][]float64, 0, o.History)
	for k := tr.burst - o.History; k < tr.burst; k++ {
		hist = append(hist, rec.Bursts[k][tr.off:tr.off+n])
	}
	cur := scaled(rec.Bursts[tr.burst][tr.off:tr.off+n], 1+delta)
	if m == MethodHistory {
		return History(hist, cur, o.Options)
	}
	return Bencher(hist, cur, o.Boundary)
}

// Table prints rows side by side: one line per number of repeats, the false alarms and
// the smallest regression detected 95 % of the time for each method.
func Table(rows []SimRow) string {
	var methods []Method
	var repeats []int
	cell := map[Method]map[int]SimRow{}
	for _, r := range rows {
		if cell[r.Method] == nil {
			cell[r.Method] = map[int]SimRow{}
			methods = append(methods, r.Method)
		}
		if _, seen := cell[methods[0]][r.Repeats]; !seen && r.Method == methods[0] {
			repeats = append(repeats, r.Repeats)
		}
		cell[r.Method][r.Repeats] = r
	}
	var b strings.Builder
	b.WriteString("| repeats |")
	for _, m := range methods {
		fmt.Fprintf(&b, " %s: false alarms / 100 | %s: smallest regression found 95 %% |", m, m)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|---|", len(methods)))
	b.WriteString("\n")
	for _, n := range repeats {
		fmt.Fprintf(&b, "| %d |", n)
		for _, m := range methods {
			r := cell[m][n]
			smallest := "none tried"
			if !math.IsNaN(r.Smallest) {
				smallest = fmt.Sprintf("%g %%", 100*r.Smallest)
			}
			fmt.Fprintf(&b, " %.1f | %s |", r.FalseAlarms, smallest)
		}
		b.WriteString("\n")
	}
	return b.String()
}
