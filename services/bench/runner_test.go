package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// checkout makes a folder whose benchmark prints its time from the file speed.
func checkout(t *testing.T, speed string) string {
	dir := t.TempDir()
	script := `echo "running in $(pwd)"
printf '{"name": "b", "results": [{"name": "t", "metrics": [{"name": "time", "value": %s, "units": "ms", "trend": "lower-is-better"}, {"name": "alloc", "value": 50}]}]}\n' "$(cat speed)"
`
	for name, content := range map[string]string{"speed": speed, "bench.sh": script} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRun(t *testing.T) {
	testenv.RequireCommand(t, "sh", "sleep")
	cases := []struct {
		name    string
		job     Job
		err     error  // errors.Is the outcome's error
		errSub  string // or contains
		samples int    // of the head's time
		order   string // of the arms in the log
	}{
		{name: "interleaved base and head", job: Job{Dir: checkout(t, "130"), BaseDir: checkout(t, "100"), Command: "sh bench.sh", Repeats: 3},
			samples: 3, order: "base head base head base head"},
		{name: "branch run", job: Job{Dir: checkout(t, "100"), Command: "sh bench.sh", Repeats: 2}, samples: 2, order: "head head"},
		{name: "never ends: killed, results kept", job: Job{Dir: checkout(t, "100"), Command: "sh bench.sh; sleep 600", Repeats: 1, Timeout: time.Second},
			err: ErrTimeout, samples: 1, order: "head"},
		{name: "fails after printing: results kept", job: Job{Dir: checkout(t, "100"), Command: "sh bench.sh; exit 3", Repeats: 2},
			errSub: "exit status 3", samples: 1, order: "head"},
		{name: "environment passed", job: Job{Dir: checkout(t, "100"), Command: `test "$KILN_X" = y && sh bench.sh`, Env: map[string]string{"KILN_X": "y"}, Repeats: 1},
			samples: 1, order: "head"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log bytes.Buffer
			start := time.Now()
			o := Run(context.Background(), c.job, &log)
			switch {
			case c.err != nil && !errors.Is(o.Err, c.err):
				t.Errorf("error %v, want %v", o.Err, c.err)
			case c.errSub != "" && (o.Err == nil || !strings.Contains(o.Err.Error(), c.errSub)):
				t.Errorf("error %v, want one containing %q", o.Err, c.errSub)
			case c.err == nil && c.errSub == "" && o.Err != nil:
				t.Errorf("error %v", o.Err)
			}
			if c.job.Timeout > 0 && time.Since(start) > time.Minute {
				t.Errorf("the never-ending command was not stopped")
			}
			m, ok := o.Head.Find("b", "t", "time")
			if !ok || len(m.Value.Points()) != c.samples {
				t.Errorf("head time %+v, want %d samples kept", m.Value, c.samples)
			}
			var order []string
			for _, l := range strings.Split(log.String(), "\n") {
				if strings.HasPrefix(l, "## repeat") {
					order = append(order, l[strings.LastIndex(l, " ")+1:])
				}
			}
			if got := strings.Join(order, " "); got != c.order {
				t.Errorf("arms ran in order %q, want %q", got, c.order)
			}
			if o.Machine.CPU == "" || o.Machine.Kernel == "" {
				t.Errorf("machine state not recorded: %+v", o.Machine)
			}
			checkLogPlaces(t, log.String(), o, [3]string{"b", "t", "time"})
		})
	}
}

// checkLogPlaces checks that o places each line that printed a sample of metric
// (benchmark, test, name) in each arm on the line of log (whose first line is 1) that
// printed that sample; each object printed one sample.
func checkLogPlaces(t *testing.T, log string, o Outcome, metric [3]string) {
	t.Helper()
	lines := strings.Split(log, "\n")
	run := store.Run{Log: o.Log}
	for arm, out := range map[store.Arm]*benchfmt.Output{store.Head: o.Head, store.Base: o.Base} {
		if out == nil {
			continue
		}
		m, ok := out.Find(metric[0], metric[1], metric[2])
		if !ok || len(m.Lines) == 0 || len(m.Lines) != len(m.Value.Samples) {
			t.Errorf("%q arm: metric %v with lines %v and samples %v", arm, metric, m.Lines, m.Value.Samples)
			continue
		}
		for k, l := range m.Lines {
			n := run.LogLine(arm, l.First)
			want := fmt.Sprintf(`"name": %q, "value": %g`, metric[2], m.Value.Samples[k])
			if n < 1 || n > len(lines) {
				t.Errorf("%q arm: output line %d placed on log line %d, outside the log's %d lines", arm, l.First, n, len(lines))
			} else if got := lines[n-1]; !strings.Contains(got, want) {
				t.Errorf("%q arm: output line %d placed on log line %d, which is %q, not the one printing %s", arm, l.First, n, got, want)
			}
		}
	}
}

// TestArmDemuxLogPlaces feeds a sandbox step's log (builder lines, the machine, both
// arms' markers and output, a partial last line) to the demux in pieces: each arm's
// metric lines are placed on the log lines that printed them.
func TestArmDemuxLogPlaces(t *testing.T) {
	metric := func(v string) string {
		return `{"name": "b", "results": [{"name": "t", "metrics": [{"name": "time", "value": ` + v + `}]}]}` + "\n"
	}
	var log strings.Builder
	log.WriteString("copying the context\n/: (run (shell ...))\n" + machineMarker + "cpu=test\n")
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&log, "%s%d/3: base\nbuilding...\n%s", armMarker, i, metric("100"))
		fmt.Fprintf(&log, "%s%d/3: head\n%slog line\n", armMarker, i, metric("130"))
	}
	log.WriteString("done without newline")
	for _, c := range []struct {
		name  string
		chunk int
	}{{"whole", 1 << 20}, {"byte by byte", 1}, {"7 bytes", 7}} {
		t.Run(c.name, func(t *testing.T) {
			d := newArmDemux(Job{BaseDir: "base"}, store.Machine{})
			in := log.String()
			for len(in) > 0 {
				n := min(c.chunk, len(in))
				d.Write([]byte(in[:n]))
				in = in[n:]
			}
			o := d.outcome(nil)
			if len(o.Log) != 6 || o.logLines != strings.Count(log.String(), "\n") {
				t.Errorf("%d spans, %d lines counted; want 6 spans and %d lines", len(o.Log), o.logLines, strings.Count(log.String(), "\n"))
			}
			checkLogPlaces(t, log.String(), o, [3]string{"b", "t", "time"})
		})
	}
}

// TestRecordJob runs an interleaved job whose head is 30 % slower and stores it: the
// time is a significant regression, the allocation unchanged; a job that never ends
// is a failed run with what it printed.
func TestRecordJob(t *testing.T) {
	testenv.RequireCommand(t, "sh", "sleep")
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	api, err := NewAPI(API{Store: st, Options: detect.Options{}, Logger: quiet}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		job   Job
		state store.State
		regr  []string
	}{
		{"30 % slower head", Job{Dir: checkout(t, "130"), BaseDir: checkout(t, "100"), Command: "sh bench.sh", Repeats: 3}, store.Passed, []string{"b/t/time"}},
		{"never ends", Job{Dir: checkout(t, "100"), Command: "sh bench.sh; sleep 600", Repeats: 1, Timeout: time.Second}, store.Failed, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Run(ctx, c.job, nil)
			resp, err := api.Record(ctx, store.Run{Repo: "gitea/o/lib", PR: int64(i + 1), Commit: "head", Base: "base"}, o)
			if err != nil {
				t.Fatal(err)
			}
			run, err := st.Run(ctx, resp.Run)
			if err != nil || run.State != c.state || run.Machine.CPU == "" {
				t.Fatalf("run %+v, %v", run, err)
			}
			if c.state == store.Failed && !strings.Contains(run.Reason, "kept") {
				t.Errorf("reason %q does not say the results were kept", run.Reason)
			}
			pts, _ := st.RunPoints(ctx, resp.Run)
			if len(pts) == 0 {
				t.Error("no metrics stored")
			}
			var regr []string
			if resp.Comparison != nil {
				for _, r := range resp.Comparison.Rows {
					if r.Regression {
						regr = append(regr, r.Key.String())
					}
				}
			}
			if strings.Join(regr, ",") != strings.Join(c.regr, ",") {
				t.Errorf("regressions %v, want %v", regr, c.regr)
			}
		})
	}
}

// TestRunCounters reads a performance counter around each run: task-clock (the CPU
// time, counted everywhere) is stored beside time, one sample per repeat and arm, and
// is larger for the arm that works more; by default instructions retired are counted
// where the CPU exposes them, and the machine state says why not where it does not.
func TestRunCounters(t *testing.T) {
	testenv.RequireCommand(t, "sh")
	// The head (speed 130) also loops 30,000 times, the base does not.
	command := `sh bench.sh; if [ "$(cat speed)" = 130 ]; then i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; fi`
	hasPMU, why := detect.CountersAvailable()
	type counterCase struct {
		name    string
		count   string
		metric  string // "" for none
		note    string // in the machine's CountersNote
		heavier bool   // the head's counts exceed the base's
	}
	cases := []counterCase{
		{name: "task-clock beside time", count: "task-clock", metric: "task-clock", note: "task-clock counted", heavier: true},
		{name: "nothing counted", count: "none"},
	}
	if hasPMU {
		cases = append(cases, counterCase{name: "instructions by default", metric: "instructions", note: "instructions counted", heavier: true})
	} else {
		cases = append(cases, counterCase{name: "no instructions without a PMU", note: why})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := Job{Dir: checkout(t, "130"), BaseDir: checkout(t, "100"), Command: command, Repeats: 2, Count: c.count}
			o := Run(context.Background(), job, nil)
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			if !strings.Contains(o.Machine.CountersNote, c.note) || o.Machine.Counters != (c.metric != "") {
				t.Errorf("machine counters %v, note %q; want %v and a note with %q", o.Machine.Counters, o.Machine.CountersNote, c.metric != "", c.note)
			}
			head, inHead := o.Head.Find(countedBench, countedTest, c.metric)
			base, inBase := o.Base.Find(countedBench, countedTest, c.metric)
			if c.metric == "" {
				for _, out := range []*benchfmt.Output{o.Head, o.Base} {
					for _, b := range out.Benchmarks {
						if b.Name == countedBench {
							t.Errorf("counts stored though none asked: %+v", b)
						}
					}
				}
				return
			}
			if !inHead || !inBase || len(head.Value.Samples) != 2 || len(base.Value.Samples) != 2 {
				t.Fatalf("counts: head %+v, base %+v; want 2 samples each", head.Value, base.Value)
			}
			for _, x := range append(head.Value.Samples, base.Value.Samples...) {
				if x <= 0 {
					t.Errorf("a count of %v", x)
				}
			}
			if c.heavier && slices.Min(head.Value.Samples) <= slices.Max(base.Value.Samples) {
				t.Errorf("the head that loops counted %v, the base %v", head.Value.Samples, base.Value.Samples)
			}
			if time, ok := o.Head.Find("b", "t", "time"); !ok || len(time.Value.Samples) != 2 {
				t.Errorf("time beside the counts: %+v", time.Value)
			}
		})
	}
}
