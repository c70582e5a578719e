package benchfmt

import (
	"bytes"
	"encoding/json"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const v3 = `Building...
{"name": "suite", "results": [{"name": "test-1", "metrics": [
  {"name": "time", "value": 150, "units": "ms", "trend": "lower-is-better", "description": "Total time"},
  {"name": "gc/minor", "value": [1, 2, 3], "units": "MB"},
  {"name": "gc/major", "value": {"min": 1, "avg": 2, "max": 4}},
  {"name": "wall", "value": "1min2.5s"},
  {"name": "rate", "value": ["3.5 ops/s", "4.5 ops/s"], "trend": "higher-is-better"}
]}]}
done {not json} here
{"name": "suite", "results": [{"name": "test-1", "metrics": [{"name": "time", "value": 152}]}]}
`

func TestParse(t *testing.T) {
	type want struct {
		bench, test, metric string
		kind                Kind
		central             float64
		units               string
		trend               Trend
		lines               []LineRange
	}
	cases := []struct {
		name    string
		in      string
		metrics []want
		errs    []int // lines of the errors, in order
		ignored int
	}{
		{
			name: "v3 with log lines and a repeated metric",
			in:   v3,
			metrics: []want{
				{"suite", "test-1", "time", List, 151, "ms", LowerIsBetter, []LineRange{{2, 8}, {10, 10}}},
				{"suite", "test-1", "gc/minor", List, 2, "MB", Unspecified, []LineRange{{2, 8}}},
				{"suite", "test-1", "gc/major", Summary, 2, "", Unspecified, nil},
				{"suite", "test-1", "wall", Number, 62.5, "s", Unspecified, nil},
				{"suite", "test-1", "rate", List, 4, "ops/s", HigherIsBetter, nil},
			},
		},
		{
			name: "v1 metrics object",
			in:   `{"name": "old", "results": [{"name": "t", "metrics": {"time": 3.5, "size": "12kB"}}]}`,
			metrics: []want{
				{"old", "t", "time", Number, 3.5, "", Unspecified, nil},
				{"old", "t", "size", Number, 12, "kB", Unspecified, nil},
			},
		},
		{
			name: "malformed object then a good one",
			in:   "{\"results\": [\n{\"name\": \"t\" \"metrics\": []}]}\n{\"results\": [{\"name\": \"t\", \"metrics\": [{\"name\": \"m\", \"value\": 1}]}]}\n",
			metrics: []want{
				{"", "t", "m", Number, 1, "", Unspecified, []LineRange{{3, 3}}},
			},
			errs: []int{2},
		},
		{
			name: "mixed value kinds in a list",
			in:   "{\"results\": [{\"name\": \"t\", \"metrics\": [\n{\"name\": \"a\", \"value\": [1, {\"avg\": 2}]},\n{\"name\": \"b\", \"value\": 2}]}]}",
			metrics: []want{
				{"", "t", "b", Number, 2, "", Unspecified, nil},
			},
			errs: []int{2},
		},
		{
			name: "summary merged with a number",
			in: `{"results": [{"name": "t", "metrics": [{"name": "a", "value": {"avg": 2}}]}]}
{"results": [{"name": "t", "metrics": [{"name": "a", "value": 3}]}]}`,
			metrics: []want{
				{"", "t", "a", Summary, 2, "", Unspecified, nil},
			},
			errs: []int{2},
		},
		{
			name: "NaN and infinities",
			in: `{"results": [{"name": "t", "metrics": [
{"name": "a", "value": "NaN"},
{"name": "c", "value": 1e999}]}]}
{"results": [{"name": "t", "metrics": [{"name": "d", "value": "-Inf s"}, {"name": "e", "value": "2.5e-1 s"}]}]}
{"results": [{"name": "t", "metrics": [{"name": "b", "value": NaN}]}]}`,
			metrics: []want{
				{"", "t", "e", Number, 0.25, "s", Unspecified, nil},
			},
			errs: []int{2, 3, 4, 5},
		},
		{
			name:    "structured log lines are not results",
			in:      `{"level": "info", "msg": "warming up"}` + "\n" + `{"results": [{"name": "t", "metrics": [{"name": "a", "value": 1, "trend": "up"}]}]}`,
			errs:    []int{2},
			ignored: 1,
		},
		{
			name: "unfinished object at the end",
			in:   "log\n{\"results\": [{\"name\": \"t\", \"metrics\": [{\"name\": \"a\", \"value\": 1}]}]}\n{\"results\": [\n",
			metrics: []want{
				{"", "t", "a", Number, 1, "", Unspecified, nil},
			},
			errs: []int{3},
		},
		{
			name: "missing avg, empty list, missing value, bad trend",
			in: `{"results": [{"name": "t", "metrics": [
{"name": "a", "value": {"min": 1}},
{"name": "b", "value": []},
{"name": "c"},
{"name": "d", "value": 1, "trend": 3}]}]}`,
			errs: []int{2, 3, 4, 5},
		},
		{
			name: "units mixed in one list",
			in:   `{"results": [{"name": "t", "metrics": [{"name": "a", "value": ["1ms", "2s"]}]}]}`,
			errs: []int{1},
		},
		{
			name:    "braces in log text",
			in:      "map {a => 1}\n{ }\n{}\nfn() { return 1; }\n",
			ignored: 2,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Feed the output in small pieces, as a running benchmark prints it.
			p := NewParser(Limits{})
			for s := c.in; s != ""; {
				n := min(7, len(s))
				p.Write([]byte(s[:n]))
				s = s[n:]
			}
			out := p.Close()
			var lines []int
			for _, e := range out.Errors {
				lines = append(lines, e.Line)
			}
			if !slices.Equal(lines, c.errs) {
				t.Errorf("errors on lines %v, want %v: %v", lines, c.errs, out.Errors)
			}
			if out.Ignored != c.ignored {
				t.Errorf("ignored %d objects, want %d", out.Ignored, c.ignored)
			}
			if out.Metrics() != len(c.metrics) {
				t.Errorf("%d metrics, want %d", out.Metrics(), len(c.metrics))
			}
			for _, w := range c.metrics {
				m, ok := out.Find(w.bench, w.test, w.metric)
				if !ok {
					t.Errorf("no metric %q", w.metric)
					continue
				}
				if m.Value.Kind != w.kind || m.Value.Central() != w.central || m.Units != w.units || m.Trend != w.trend {
					t.Errorf("%s: kind %s central %v units %q trend %q, want %s %v %q %q",
						w.metric, m.Value.Kind, m.Value.Central(), m.Units, m.Trend, w.kind, w.central, w.units, w.trend)
				}
				if w.lines != nil && !slices.Equal(m.Lines, w.lines) {
					t.Errorf("%s: lines %v, want %v", w.metric, m.Lines, w.lines)
				}
			}
		})
	}
}

func TestGroup(t *testing.T) {
	for _, c := range []struct{ name, group string }{
		{"ocaml/parsing", "ocaml"},
		{"a/b/c", "a/b"},
		{"time", "time"},
		{"/odd", "/odd"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if g := (Metric{Name: c.name}).Group(); g != c.group {
				t.Errorf("Group() = %q, want %q", g, c.group)
			}
		})
	}
}

// repeatReader gives s n times without holding the copies.
type repeatReader struct {
	s   string
	n   int
	off int
}

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(b, r.s[r.off:])
	r.off += k
	if r.off == len(r.s) {
		r.off = 0
		r.n--
	}
	return k, nil
}

// TestLargeOutput reads 100 MB of output (log lines, repeated results and one huge
// object) and checks that memory stays bounded and every limit is reported.
func TestLargeOutput(t *testing.T) {
	obj := `{"results": [{"name": "t", "metrics": [{"name": "m", "value": 1}]}]}` + "\n"
	chunk := strings.Repeat("some log output that is not json at all\n", 100) + obj
	cases := []struct {
		name   string
		r      io.Reader
		lim    Limits
		errSub string
	}{
		{"samples capped", &repeatReader{s: chunk, n: 100 << 20 / len(chunk)}, Limits{MaxSamples: 1000}, "more than 1000 samples"},
		{"object too large", io.MultiReader(strings.NewReader(`{"results": [`), &repeatReader{s: "1, ", n: 30 << 20}, strings.NewReader("1]}\n"+obj)), Limits{MaxObject: 1 << 20}, "larger than 1048576 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			out, err := Parse(c.r, c.lim)
			if err != nil {
				t.Fatal(err)
			}
			// What the parser keeps after reading it all, not the garbage it made.
			runtime.GC()
			runtime.ReadMemStats(&after)
			if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 16<<20 {
				t.Errorf("%d MB kept after reading the output", grown>>20)
			}
			runtime.KeepAlive(out)
			if len(out.Errors) == 0 || !strings.Contains(out.Errors[0].Msg, c.errSub) {
				t.Errorf("errors %v, want one containing %q", out.Errors, c.errSub)
			}
			if _, ok := out.Find("", "t", "m"); !ok {
				t.Error("the valid results were not kept")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(v3)
	f.Add(`{"results": [{"name": "t", "metrics": {"a": [1, "2ms"]}}]}`)
	f.Add(`{"a": [1, 2.5e3, -0.1, true, false, null, "x\"y"]} {"results": [}`)
	f.Fuzz(func(t *testing.T, in string) {
		whole, _ := Parse(strings.NewReader(in), Limits{MaxObject: 4096})
		p := NewParser(Limits{MaxObject: 4096})
		for i := 0; i < len(in); i++ {
			p.Write([]byte{in[i]})
		}
		bytewise := p.Close()
		a, _ := json.Marshal(whole)
		b, _ := json.Marshal(bytewise)
		if !bytes.Equal(a, b) {
			t.Fatalf("fed whole and byte by byte differ:\n%s\n%s", a, b)
		}
		for _, e := range whole.Errors {
			if e.Line < 1 || e.Line > whole.Lines+1 {
				t.Fatalf("error on line %d of %d lines: %v", e.Line, whole.Lines, e)
			}
		}
		for _, bench := range whole.Benchmarks {
			for _, r := range bench.Results {
				for _, m := range r.Metrics {
					if len(m.Value.Points()) == 0 {
						t.Fatalf("metric %q without numbers", m.Name)
					}
				}
			}
		}
		// Anything encoding/json accepts as a whole object, the syntax check accepts.
		if strings.HasPrefix(in, "{") && json.Valid([]byte(in)) {
			for _, e := range whole.Errors {
				if strings.Contains(e.Msg, "malformed") {
					t.Fatalf("valid JSON reported malformed: %v", e)
				}
			}
		}
	})
}
