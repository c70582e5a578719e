// Package benchfmt reads benchmark results in current-bench's JSON format (version 3
// and the legacy version 1) from a benchmark's output, where result objects are mixed
// with log lines. It is streaming: a Parser is fed the output as it is printed, keeps
// only the object being read and the merged results, and reports each problem with the
// line it is on while keeping every result that was valid.
package benchfmt

import (
	"fmt"
	"math"
	"strings"
)

// Trend says which direction of a metric is an improvement.
type Trend string

// The trends a metric can declare.
const (
	Unspecified    Trend = ""
	HigherIsBetter Trend = "higher-is-better"
	LowerIsBetter  Trend = "lower-is-better"
)

// Kind is the form a metric's value was given in.
type Kind string

// The value kinds of the format.
const (
	Number  Kind = "number"  // one number (or a string with units)
	List    Kind = "list"    // a list of numbers: one per repeat
	Summary Kind = "summary" // an object {min, avg, max, …}; avg is required
)

// Value is a metric's value.
type Value struct {
	Kind Kind `json:"kind"`
	// Samples are the numbers of a Number (one) or a List.
	Samples []float64 `json:"samples,omitempty"`
	// Summary holds the named numbers of a Summary (avg always; min, max usually).
	Summary map[string]float64 `json:"summary,omitempty"`
}

// Points are the value's numbers for statistics: the samples, or a summary's avg.
func (v Value) Points() []float64 {
	if v.Kind == Summary {
		return []float64{v.Summary["avg"]}
	}
	return v.Samples
}

// Central is the value's average: the mean of the samples or the summary's avg.
func (v Value) Central() float64 {
	if v.Kind == Summary {
		return v.Summary["avg"]
	}
	var s float64
	for _, x := range v.Samples {
		s += x
	}
	return s / float64(len(v.Samples))
}

// Band is the value's lowest and highest number (a summary's min and max when given).
func (v Value) Band() (lo, hi float64) {
	if v.Kind == Summary {
		lo, hi = v.Summary["avg"], v.Summary["avg"]
		if m, ok := v.Summary["min"]; ok {
			lo = m
		}
		if m, ok := v.Summary["max"]; ok {
			hi = m
		}
		return lo, hi
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v.Samples {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// LineRange is the first and last line (1-based) of the output that printed a metric.
type LineRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// Metric is one measured quantity of a test.
type Metric struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Units       string      `json:"units,omitempty"`
	Trend       Trend       `json:"trend,omitempty"`
	Value       Value       `json:"value"`
	Lines       []LineRange `json:"lines,omitempty"`
}

// Group is the graph a metric is drawn in: the part of its name before the last '/',
// or the whole name when it has none.
func (m Metric) Group() string {
	if i := strings.LastIndexByte(m.Name, '/'); i > 0 {
		return m.Name[:i]
	}
	return m.Name
}

// Result is the metrics of one test.
type Result struct {
	Test    string   `json:"test"`
	Metrics []Metric `json:"metrics"`
}

// Benchmark is the results of one benchmark suite (the objects with one "name").
type Benchmark struct {
	Name    string   `json:"name,omitempty"`
	Version int      `json:"version"`
	Results []Result `json:"results"`
}

// Error is a problem in the output, at a line.
type Error struct {
	Line int    `json:"line"`
	Col  int    `json:"col,omitempty"`
	Msg  string `json:"message"`
}

func (e *Error) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// Output is what a benchmark printed: its results, merged by benchmark, test and
// metric name (a metric printed again adds samples), and the problems found.
type Output struct {
	Benchmarks []Benchmark `json:"benchmarks"`
	Errors     []*Error    `json:"errors,omitempty"`
	// DroppedErrors counts errors beyond the limit kept in Errors.
	DroppedErrors int `json:"dropped_errors,omitempty"`
	// Lines is the number of lines read.
	Lines int `json:"lines"`
	// Ignored counts JSON objects without "results" (structured log lines).
	Ignored int `json:"ignored,omitempty"`
}

// Metrics returns the number of metrics in o.
func (o *Output) Metrics() int {
	n := 0
	for _, b := range o.Benchmarks {
		for _, r := range b.Results {
			n += len(r.Metrics)
		}
	}
	return n
}

// Find returns the metric of benchmark bench, test and name, if o has it.
func (o *Output) Find(bench, test, name string) (Metric, bool) {
	for _, b := range o.Benchmarks {
		if b.Name != bench {
			continue
		}
		for _, r := range b.Results {
			if r.Test != test {
				continue
			}
			for _, m := range r.Metrics {
				if m.Name == name {
					return m, true
				}
			}
		}
	}
	return Metric{}, false
}
