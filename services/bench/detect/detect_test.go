package detect

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/services/bench/benchfmt"
)

// TestTQuantile checks against the values of Student's t tables.
func TestTQuantile(t *testing.T) {
	for _, c := range []struct {
		name  string
		p, df float64
		want  float64
	}{
		{"0.975 df 1", 0.975, 1, 12.706},
		{"0.975 df 10", 0.975, 10, 2.228},
		{"0.995 df 20", 0.995, 20, 2.845},
		{"0.99 df 1000", 0.99, 1000, 2.330},
		{"0.05 df 5", 0.05, 5, -2.015},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := tQuantile(c.p, c.df); math.Abs(got-c.want) > 0.001 {
				t.Errorf("tQuantile(%g, %g) = %.4f, want %.3f", c.p, c.df, got, c.want)
			}
		})
	}
}

func TestVerdicts(t *testing.T) {
	hist := [][]float64{{100, 101}, {99, 100}, {100, 102}, {101, 100}, {100, 99}, {98, 100}}
	quiet := Noise{Var: 0.0001, DF: 20} // 1 % per pair
	cases := []struct {
		name        string
		v           Verdict
		significant bool
		regression  bool
		reason      string
	}{
		{"interleaved 30 % slower", Interleaved([]float64{100, 101, 99}, []float64{130, 131, 129}, quiet, Options{}), true, true, ""},
		{"interleaved unchanged", Interleaved([]float64{100, 101, 99}, []float64{100.5, 100, 99.5}, quiet, Options{}), false, false, ""},
		{"interleaved one pair, no prior", Interleaved([]float64{100}, []float64{130}, Noise{}, Options{}), false, false, "one pair"},
		{"interleaved one pair with prior", Interleaved([]float64{100}, []float64{130}, quiet, Options{}), true, true, ""},
		{"interleaved unpaired", Interleaved([]float64{100, 1}, []float64{130}, quiet, Options{}), false, false, "not paired"},
		{"interleaved faster", Interleaved([]float64{100, 100}, []float64{80, 81}, quiet, Options{}), true, false, ""},
		{"interleaved below MinChange", Interleaved([]float64{100, 100, 100}, []float64{103, 103, 103}, Noise{Var: 1e-8, DF: 20}, Options{MinChange: 0.05}), false, false, ""},
		{"history 30 % slower", History(hist, []float64{130, 131}, Options{}), true, true, ""},
		{"history unchanged", History(hist, []float64{100, 101}, Options{}), false, false, ""},
		{"history too short", History(hist[:2], []float64{130}, Options{}), false, false, "earlier commits"},
		{"history zero sample", History(hist, []float64{0}, Options{}), false, false, "positive"},
		{"bencher 30 % slower", Bencher(hist, []float64{130, 131}, 0.99), true, true, ""},
		{"bencher unchanged", Bencher(hist, []float64{100}, 0.99), false, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.v.Significant != c.significant || c.v.Regression(benchfmt.LowerIsBetter) != c.regression {
				t.Errorf("verdict %s: significant %v regression %v, want %v %v", c.v, c.v.Significant, c.v.Regression(benchfmt.LowerIsBetter), c.significant, c.regression)
			}
			if !strings.Contains(c.v.Reason, c.reason) || (c.reason == "") != (c.v.Reason == "") {
				t.Errorf("reason %q, want one containing %q", c.v.Reason, c.reason)
			}
			if c.v.Reason == "" && c.v.Method != MethodBencher && !(c.v.Low <= c.v.Change && c.v.Change <= c.v.High) {
				t.Errorf("change %g outside its interval [%g, %g]", c.v.Change, c.v.Low, c.v.High)
			}
		})
	}
	t.Run("trend higher is better", func(t *testing.T) {
		v := Interleaved([]float64{100, 101, 99}, []float64{130, 131, 129}, quiet, Options{})
		if v.Regression(benchfmt.HigherIsBetter) || !v.Improvement(benchfmt.HigherIsBetter) {
			t.Errorf("30 %% more of a higher-is-better metric is not an improvement: %s", v)
		}
	})
}

// synthetic makes a recording of log-normal noise: sd within a burst, and each burst
// shifted by a log-normal drift of sd drift (the machine's state between jobs).
func synthetic(seed uint64, bursts, size int, sd, drift float64) *Recording {
	rng := rand.New(rand.NewPCG(seed, 1))
	rec := &Recording{}
	for range bursts {
		shift := drift * rng.NormFloat64()
		b := make([]float64, size)
		for i := range b {
			b[i] = 1e6 * math.Exp(shift+sd*rng.NormFloat64())
		}
		rec.Bursts = append(rec.Bursts, b)
	}
	return rec
}

// TestSimulationCalibrated checks the detectors on noise of known shape: at 99 %
// confidence about 1 false alarm per 100 unchanged commits, and with drift between
// jobs the interleaved runs find smaller regressions than the history comparisons.
func TestSimulationCalibrated(t *testing.T) {
	cases := []struct {
		name      string
		rec       *Recording
		drift     bool
		maxAlarms float64
	}{
		{"steady machine", synthetic(1, 120, 20, 0.01, 0), false, 4},
		{"drift between jobs", synthetic(2, 120, 20, 0.005, 0.03), true, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows, err := Simulate(c.rec, SimOptions{Trials: 600, Repeats: []int{3, 10}, Seed: 7})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", Table(rows))
			got := map[Method]map[int]SimRow{}
			for _, r := range rows {
				if got[r.Method] == nil {
					got[r.Method] = map[int]SimRow{}
				}
				got[r.Method][r.Repeats] = r
				if r.Method != MethodBencher && r.FalseAlarms > c.maxAlarms {
					t.Errorf("%s, %d repeats: %.1f false alarms per 100, want at most %g at 99 %% confidence", r.Method, r.Repeats, r.FalseAlarms, c.maxAlarms)
				}
				if math.IsNaN(r.Smallest) {
					t.Errorf("%s, %d repeats: no regression tried is found 95 %% of the time", r.Method, r.Repeats)
				}
			}
			if got[MethodInterleaved][10].Smallest > got[MethodInterleaved][3].Smallest {
				t.Errorf("10 repeats find less than 3: %g > %g", got[MethodInterleaved][10].Smallest, got[MethodInterleaved][3].Smallest)
			}
			if c.drift && got[MethodInterleaved][10].Smallest >= got[MethodHistory][10].Smallest {
				t.Errorf("with drift, interleaved finds %g, history %g: interleaving should cancel the drift",
					got[MethodInterleaved][10].Smallest, got[MethodHistory][10].Smallest)
			}
		})
	}
}
