package benchfmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Limits bound what a Parser keeps, whatever the size of the output.
type Limits struct {
	// MaxObject is the largest result object kept, in bytes (default 4 MiB); a larger
	// one is reported and skipped.
	MaxObject int
	// MaxMetrics is the number of distinct metrics kept (default 10,000).
	MaxMetrics int
	// MaxSamples is the number of samples kept per metric (default 100,000).
	MaxSamples int
	// MaxErrors is the number of errors kept (default 100); the rest are counted.
	MaxErrors int
}

func (l Limits) withDefaults() Limits {
	if l.MaxObject <= 0 {
		l.MaxObject = 4 << 20
	}
	if l.MaxMetrics <= 0 {
		l.MaxMetrics = 10000
	}
	if l.MaxSamples <= 0 {
		l.MaxSamples = 100000
	}
	if l.MaxErrors <= 0 {
		l.MaxErrors = 100
	}
	return l
}

type metricKey struct{ bench, test, metric string }

type testKey struct{ bench, test string }

// Parser reads a benchmark's output as it is written (it is an io.Writer) and collects
// the result objects in it. Text outside objects is log output and is skipped; an
// object is a candidate result when '{' is followed by '"' (or '}').
type Parser struct {
	lim  Limits
	out  Output
	line int
	col  int

	pending   bool // '{' seen outside an object, deciding whether an object starts
	in        bool // inside an object
	oversize  bool // the object outgrew MaxObject: checked, not kept
	buf       []byte
	startLine int
	startCol  int
	syn       syntax

	benches map[string]int
	tests   map[testKey]int
	metrics map[metricKey]int
	nmetric int
}

// NewParser returns a Parser with the limits given (zero fields take the defaults).
func NewParser(lim Limits) *Parser {
	return &Parser{
		lim: lim.withDefaults(), line: 1,
		benches: map[string]int{}, tests: map[testKey]int{}, metrics: map[metricKey]int{},
	}
}

// Parse reads r to its end and returns its results; the error is only r's.
func Parse(r io.Reader, lim Limits) (*Output, error) {
	p := NewParser(lim)
	_, err := io.Copy(p, r)
	return p.Close(), err
}

// Write takes the next bytes of the output. It never fails.
func (p *Parser) Write(b []byte) (int, error) {
	for _, c := range b {
		p.col++
		p.byte(c)
		if c == '\n' {
			p.line++
			p.col = 0
		}
	}
	p.out.Lines = p.line
	return len(b), nil
}

// Close ends the output and returns everything read. An unfinished object is
// reported at the line it starts on.
func (p *Parser) Close() *Output {
	if p.in {
		p.errorf(p.startLine, p.startCol, "the object that starts here is not finished at the end of the output")
		p.in = false
	}
	if p.col == 0 && p.line > 1 {
		p.out.Lines = p.line - 1
	}
	return &p.out
}

// Output returns what was read so far; it is shared with the Parser.
func (p *Parser) Output() *Output { return &p.out }

func (p *Parser) byte(c byte) {
	if p.pending {
		switch {
		case isSpace(c):
			p.buf = append(p.buf, c)
			return
		case c == '"' || c == '}':
			p.pending, p.in, p.oversize = false, true, false
			p.syn.start()
		default:
			p.pending = false
		}
	}
	if !p.in {
		if c == '{' {
			p.pending = true
			p.buf = append(p.buf[:0], c)
			p.startLine, p.startCol = p.line, p.col
		}
		return
	}
	if !p.oversize {
		if len(p.buf) >= p.lim.MaxObject {
			p.oversize = true
			p.buf = nil
			p.errorf(p.startLine, p.startCol, "the object that starts here is larger than %d bytes: skipped", p.lim.MaxObject)
		} else {
			p.buf = append(p.buf, c)
		}
	}
	done, err := p.syn.step(c)
	switch {
	case err != nil:
		p.errorf(p.line, p.col, "malformed JSON in the object that starts on line %d: %v", p.startLine, err)
		p.in = false
		if c == '{' {
			p.byte(c) // it may start the next object
		}
	case done:
		p.in = false
		if !p.oversize {
			p.object(p.buf, LineRange{p.startLine, p.line})
		}
		if cap(p.buf) > 64<<10 {
			p.buf = nil // give a large object's buffer back
		}
	}
}

func (p *Parser) errorf(line, col int, format string, args ...any) {
	if len(p.out.Errors) >= p.lim.MaxErrors {
		p.out.DroppedErrors++
		return
	}
	p.out.Errors = append(p.out.Errors, &Error{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// node is a decoded JSON value with the offset it starts at.
type node struct {
	off  int64
	kind byte // '{', '[', '"', '0' (number), 'b' (bool), 'n' (null)
	str  string
	num  json.Number
	keys []string
	vals []*node
}

func (n *node) get(key string) *node {
	for i, k := range n.keys {
		if k == key {
			return n.vals[i]
		}
	}
	return nil
}

func decodeNode(d *json.Decoder) (*node, error) {
	off := d.InputOffset()
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	n := &node{off: off}
	switch t := tok.(type) {
	case json.Delim:
		n.kind = byte(t)
		for d.More() {
			if t == '{' {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			v, err := decodeNode(d)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, v)
		}
		if _, err := d.Token(); err != nil {
			return nil, err
		}
	case string:
		n.kind, n.str = '"', t
	case json.Number:
		n.kind, n.num = '0', t
	case bool:
		n.kind = 'b'
	case nil:
		n.kind = 'n'
	}
	return n, nil
}

// object reads one complete object printed on lines.
func (p *Parser) object(buf []byte, lines LineRange) {
	d := json.NewDecoder(bytes.NewReader(buf))
	d.UseNumber()
	root, err := decodeNode(d)
	if err != nil {
		p.errorf(lines.First, 0, "malformed JSON: %v", err)
		return
	}
	at := func(n *node) int {
		if n == nil {
			return lines.First
		}
		i := int(n.off)
		for i < len(buf) && (isSpace(buf[i]) || buf[i] == ',' || buf[i] == ':') {
			i++
		}
		return lines.First + bytes.Count(buf[:i], []byte{'\n'})
	}
	results := root.get("results")
	if results == nil {
		p.out.Ignored++
		return
	}
	var b Benchmark
	b.Version = 3
	if n := root.get("name"); n != nil {
		if n.kind != '"' {
			p.errorf(at(n), 0, `"name" of the benchmark is not a string`)
			return
		}
		b.Name = n.str
	}
	if n := root.get("version"); n != nil {
		v, err := strconv.Atoi(string(n.num))
		if n.kind != '0' || err != nil || (v != 1 && v != 2 && v != 3) {
			p.errorf(at(n), 0, `"version" is not 1, 2 or 3`)
			return
		}
		b.Version = v
	}
	if results.kind != '[' {
		p.errorf(at(results), 0, `"results" is not a list`)
		return
	}
	for i, r := range results.vals {
		where := fmt.Sprintf("results[%d]", i)
		if r.kind != '{' {
			p.errorf(at(r), 0, "%s is not an object", where)
			continue
		}
		name := r.get("name")
		if name == nil || name.kind != '"' {
			p.errorf(at(r), 0, `%s has no "name" string`, where)
			continue
		}
		where = fmt.Sprintf("test %q", name.str)
		ms := r.get("metrics")
		switch {
		case ms == nil:
			p.errorf(at(r), 0, `%s has no "metrics"`, where)
		case ms.kind == '[':
			for j, m := range ms.vals {
				if met, err := metricV3(m); err != nil {
					p.errorf(at(m), 0, "%s, metrics[%d]: %v", where, j, err)
				} else {
					met.Lines = []LineRange{lines}
					p.add(b, name.str, met, at(m))
				}
			}
		case ms.kind == '{':
			if b.Version == 3 {
				b.Version = 1
			}
			for j, k := range ms.keys {
				val, units, err := value(ms.vals[j])
				if err != nil {
					p.errorf(at(ms.vals[j]), 0, "%s, metric %q: %v", where, k, err)
					continue
				}
				p.add(b, name.str, Metric{Name: k, Units: units, Value: val, Lines: []LineRange{lines}}, at(ms.vals[j]))
			}
		default:
			p.errorf(at(ms), 0, `%s: "metrics" is neither a list (version 3) nor an object (version 1)`, where)
		}
	}
}

func metricV3(m *node) (Metric, error) {
	var met Metric
	if m.kind != '{' {
		return met, errors.New("not an object")
	}
	name := m.get("name")
	if name == nil || name.kind != '"' || name.str == "" {
		return met, errors.New(`no "name" string`)
	}
	met.Name = name.str
	strField := func(key string) (string, error) {
		n := m.get(key)
		switch {
		case n == nil || n.kind == 'n':
			return "", nil
		case n.kind != '"':
			return "", fmt.Errorf("metric %q: %q is not a string", met.Name, key)
		}
		return n.str, nil
	}
	var err error
	if met.Description, err = strField("description"); err != nil {
		return met, err
	}
	if met.Units, err = strField("units"); err != nil {
		return met, err
	}
	trend, err := strField("trend")
	if err != nil {
		return met, err
	}
	switch met.Trend = Trend(trend); met.Trend {
	case Unspecified, HigherIsBetter, LowerIsBetter:
	default:
		return met, fmt.Errorf("metric %q: \"trend\" is %q, not %q, %q or unset", met.Name, trend, LowerIsBetter, HigherIsBetter)
	}
	v := m.get("value")
	if v == nil {
		return met, fmt.Errorf("metric %q has no \"value\"", met.Name)
	}
	val, units, err := value(v)
	if err != nil {
		return met, fmt.Errorf("metric %q: %w", met.Name, err)
	}
	met.Value = val
	if met.Units == "" {
		met.Units = units
	}
	return met, nil
}

// value reads a metric's value: a number, a string with units, a list of those or an
// object of those with "avg". It returns the units the strings carried.
func value(n *node) (Value, string, error) {
	switch n.kind {
	case '[':
		if len(n.vals) == 0 {
			return Value{}, "", errors.New("the value is an empty list")
		}
		v := Value{Kind: List}
		units := ""
		for i, e := range n.vals {
			if e.kind != '0' && e.kind != '"' {
				return Value{}, "", fmt.Errorf("value[%d] is not a number: a list mixes kinds of values", i)
			}
			x, u, err := scalar(e)
			if err != nil {
				return Value{}, "", fmt.Errorf("value[%d]: %w", i, err)
			}
			if units, err = sameUnits(units, u); err != nil {
				return Value{}, "", err
			}
			v.Samples = append(v.Samples, x)
		}
		return v, units, nil
	case '{':
		v := Value{Kind: Summary, Summary: map[string]float64{}}
		units := ""
		for i, k := range n.keys {
			e := n.vals[i]
			if e.kind != '0' && e.kind != '"' {
				return Value{}, "", fmt.Errorf("value.%s is not a number: a summary mixes kinds of values", k)
			}
			x, u, err := scalar(e)
			if err != nil {
				return Value{}, "", fmt.Errorf("value.%s: %w", k, err)
			}
			if units, err = sameUnits(units, u); err != nil {
				return Value{}, "", err
			}
			v.Summary[k] = x
		}
		if _, ok := v.Summary["avg"]; !ok {
			return Value{}, "", errors.New(`the value object has no "avg"`)
		}
		return v, units, nil
	case '0', '"':
		x, u, err := scalar(n)
		if err != nil {
			return Value{}, "", err
		}
		return Value{Kind: Number, Samples: []float64{x}}, u, nil
	}
	return Value{}, "", errors.New("the value is not a number, a string with units, a list or an object")
}

func sameUnits(have, u string) (string, error) {
	if have != "" && u != "" && have != u {
		return "", fmt.Errorf("the value mixes units %q and %q", have, u)
	}
	if have == "" {
		return u, nil
	}
	return have, nil
}

// scalar reads a number or a string such as "12.5ms", "3 s" or "1min2.5s".
func scalar(n *node) (float64, string, error) {
	if n.kind == '0' {
		x, err := strconv.ParseFloat(string(n.num), 64)
		if err != nil || math.IsInf(x, 0) {
			return 0, "", fmt.Errorf("%s is out of range", n.num)
		}
		return x, "", nil
	}
	s := strings.TrimSpace(n.str)
	if m, rest, ok := strings.Cut(s, "min"); ok && strings.HasSuffix(rest, "s") {
		mins, err1 := finite(m)
		secs, err2 := finite(strings.TrimSuffix(rest, "s"))
		if err1 == nil && err2 == nil {
			return mins*60 + secs, "s", nil
		}
	}
	i := 0
	for i < len(s) && (numByte(s[i]) && !(i > 0 && (s[i] == 'e' || s[i] == 'E') && !expFollows(s[i+1:]))) {
		i++
	}
	x, err := finite(s[:i])
	if err != nil {
		return 0, "", fmt.Errorf("%q is not a number with units", n.str)
	}
	return x, strings.TrimSpace(s[i:]), nil
}

// expFollows reports whether s (after an 'e') continues an exponent, so that "3em" is
// 3 in units "em" while "3e2ms" is 300 ms.
func expFollows(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return s != "" && s[0] >= '0' && s[0] <= '9'
}

func finite(s string) (float64, error) {
	if s == "" {
		return 0, errors.New("no number")
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, fmt.Errorf("%q is not a finite number", s)
	}
	return x, nil
}

// add merges met into the output: a metric printed again adds its samples.
func (p *Parser) add(b Benchmark, test string, met Metric, line int) {
	bi, ok := p.benches[b.Name]
	if !ok {
		bi = len(p.out.Benchmarks)
		p.benches[b.Name] = bi
		p.out.Benchmarks = append(p.out.Benchmarks, Benchmark{Name: b.Name, Version: b.Version})
	}
	bench := &p.out.Benchmarks[bi]
	tk := testKey{b.Name, test}
	ti, ok := p.tests[tk]
	if !ok {
		ti = len(bench.Results)
		p.tests[tk] = ti
		bench.Results = append(bench.Results, Result{Test: test})
	}
	res := &bench.Results[ti]
	mk := metricKey{b.Name, test, met.Name}
	mi, ok := p.metrics[mk]
	if !ok {
		if p.nmetric >= p.lim.MaxMetrics {
			p.errorf(line, 0, "metric %q of test %q: more than %d metrics; skipped", met.Name, test, p.lim.MaxMetrics)
			return
		}
		if len(met.Value.Samples) > p.lim.MaxSamples {
			met.Value.Samples = met.Value.Samples[:p.lim.MaxSamples]
			p.errorf(line, 0, "metric %q of test %q: more than %d samples; the rest skipped", met.Name, test, p.lim.MaxSamples)
		}
		p.nmetric++
		p.metrics[mk] = len(res.Metrics)
		res.Metrics = append(res.Metrics, met)
		return
	}
	if err := merge(&res.Metrics[mi], met, p.lim.MaxSamples); err != nil {
		p.errorf(line, 0, "metric %q of test %q printed again: %v; the new value is skipped", met.Name, test, err)
	}
}

func merge(into *Metric, m Metric, maxSamples int) error {
	if into.Value.Kind == Summary || m.Value.Kind == Summary {
		return errors.New("a {min, avg, max} value cannot be merged with another value")
	}
	if into.Trend != m.Trend && into.Trend != Unspecified && m.Trend != Unspecified {
		return fmt.Errorf("its trend %q differs from %q", m.Trend, into.Trend)
	}
	if into.Units != m.Units && into.Units != "" && m.Units != "" {
		return fmt.Errorf("its units %q differ from %q", m.Units, into.Units)
	}
	if len(into.Value.Samples)+len(m.Value.Samples) > maxSamples {
		return fmt.Errorf("more than %d samples", maxSamples)
	}
	if into.Trend == Unspecified {
		into.Trend = m.Trend
	}
	if into.Units == "" {
		into.Units = m.Units
	}
	if len(m.Description) > len(into.Description) {
		into.Description = m.Description
	}
	into.Value.Kind = List
	into.Value.Samples = append(into.Value.Samples, m.Value.Samples...)
	into.Lines = append(into.Lines, m.Lines...)
	return nil
}
