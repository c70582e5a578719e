package fleetjob

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
)

// FailingLines picks the lines of a failed log that explain it: the compiler's and
// dune's error blocks (`File "…", line …` with the code, the error and any diff of a
// test's expected output), test runners' uncaught exceptions and opam's `#=== ERROR`
// sections, each block once; or, when there are none, the lines that look like errors;
// or else the last lines. kiln's own lines (the builder's step lines, the fleet's
// `--- failed: … ---` trailer, "command failed with exit status N") are never picked.
// At most maxFailingLines, the first ones.
func FailingLines(lines []string) []string {
	var keep []string
	seen := map[string]bool{}
	for _, block := range errorBlocks(lines) {
		key := strings.Join(block, "\n")
		if !seen[key] {
			seen[key] = true
			keep = append(keep, block...)
		}
	}
	if len(keep) == 0 {
		for _, l := range lines {
			l = strings.TrimSpace(l)
			if looseError.MatchString(l) && !ownLine(l) && !seen[l] {
				seen[l] = true
				keep = append(keep, l)
			}
		}
	}
	if len(keep) == 0 {
		keep = lastLines(lines, 10)
	}
	if len(keep) > maxFailingLines {
		keep = keep[:maxFailingLines]
	}
	return keep
}

// errorBlocks are the error blocks of a log, in order.
func errorBlocks(lines []string) [][]string {
	var blocks [][]string
	action := "" // the header of the dune action whose output follows
	for i := 0; i < len(lines); {
		l := normalise(lines[i])
		switch {
		case strings.HasPrefix(l, "#=== ERROR"):
			bs, n := opamSection(lines[i:])
			blocks = append(blocks, bs...)
			i += n
			action = ""
		case fileLine.MatchString(l):
			block, n := fileBlock(lines[i:])
			blocks = append(blocks, block)
			i += n
			action = ""
		case errorLine.MatchString(l) && !ownLine(l):
			if action != "" {
				blocks = append(blocks, []string{action, l})
				action = ""
			} else {
				blocks = append(blocks, []string{l})
			}
			i++
		case strings.HasPrefix(l, " ") && duneAction.MatchString(l):
			action = strings.TrimSpace(l)
			i++
		default:
			i++
		}
	}
	return blocks
}

// lastLines are the last n lines that are not blank and not kiln's own.
func lastLines(lines []string, n int) []string {
	var out []string
	for _, l := range lines {
		if !ownLine(l) && strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out[max(0, len(out)-n):]
}

// maxFailingLines bounds the lines FailingLines picks.
const maxFailingLines = 30

var (
	// fileLine starts a compiler or dune error block.
	fileLine = regexp.MustCompile(`^File "[^"]+", lines? \d+`)
	// errorLine is a line saying what went wrong, outside a block.
	errorLine = regexp.MustCompile(`^(Error|Fatal error|\[ERROR\]|Uncaught exception|Exception:|ERROR:|FAIL\b)`)
	// looseError is a line that mentions an error anywhere.
	looseError = regexp.MustCompile(`(?i)\berror\b|\bexception\b|\bfailed\b|\bfailure\b`)
	// duneAction is dune's header of a failed action ("ocamlc x.cmo (exit 2)") and the
	// command line after it.
	duneAction = regexp.MustCompile(`^\s+\S.*\((exit \d+|got signal \w+)\)$|^\(cd \S+ && `)
	// kilnOwn are the lines the builder and the fleet add to a log.
	kilnOwn = regexp.MustCompile(`^--- .* ---$|^/\S*: \(|command failed with exit status \d+$|^\(from \S+\)$|^Importing base `)
	// diffMeta are a diff's header lines, before its hunks.
	diffMeta = regexp.MustCompile(`^(diff --git |index [0-9a-f]+\.\.|--- |\+\+\+ |@@ )`)
)

func ownLine(l string) bool { return kilnOwn.MatchString(strings.TrimSpace(l)) }

// normalise drops what opam puts before a command's output ("- " while it runs, "# "
// in its error report), so the same error is the same line wherever it is shown.
func normalise(l string) string {
	for _, p := range []string{"- ", "# "} {
		if rest, ok := strings.CutPrefix(l, p); ok {
			return rest
		}
	}
	return l
}

// fileBlock reads a `File "…", line …` block: the code excerpt, the error or warning
// with its continuation lines, and a diff of expected output (its hunks only). It
// returns the block and how many lines it spans.
func fileBlock(lines []string) ([]string, int) {
	block := []string{normalise(lines[0])}
	inDiff := false
	i := 1
	for ; i < len(lines); i++ {
		raw := lines[i]
		l := normalise(raw)
		switch {
		case fileLine.MatchString(l), strings.HasPrefix(l, "#=== ERROR"), ownLine(l):
			return block, i
		case diffMeta.MatchString(l):
			inDiff = true
		case duneAction.MatchString(l):
			if len(block) > 1 {
				return block, i
			}
		case inDiff && (strings.HasPrefix(raw, " ") || strings.HasPrefix(raw, "-") || strings.HasPrefix(raw, "+")):
			block = append(block, raw)
		case inDiff:
			return block, i
		case strings.TrimSpace(l) == "":
			return block, i + 1
		case strings.HasPrefix(l, " "), codeLine.MatchString(l), blockStart.MatchString(l):
			block = append(block, l)
		default:
			return block, i
		}
	}
	return block, i
}

var (
	// codeLine is the compiler's quote of the source ("2 | let x = …").
	codeLine = regexp.MustCompile(`^\d+ \| |^\.\.\.`)
	// blockStart are the lines of a compiler message after the location.
	blockStart = regexp.MustCompile(`^(Error|Warning|Alert|Hint|Fatal error|Exception)\b`)
)

// opamSection reads opam's `#=== ERROR while compiling …` report: its header, then
// the error blocks of the command's output (or its last lines). It returns the blocks
// and how many lines the report spans.
func opamSection(lines []string) ([][]string, int) {
	header := strings.TrimSpace(strings.TrimRight(lines[0], "=#"))
	var output []string
	inOutput := false
	i := 1
	for ; i < len(lines) && strings.HasPrefix(lines[i], "#"); i++ {
		if inOutput {
			output = append(output, normalise(lines[i]))
		}
		inOutput = inOutput || strings.HasPrefix(lines[i], "### output ###")
	}
	blocks := errorBlocks(output)
	if len(blocks) == 0 {
		blocks = [][]string{lastLines(output, 10)}
	}
	return append([][]string{{header}}, blocks...), i
}

// tailWriter keeps the last max lines written to it, without terminal colours.
type tailWriter struct {
	mu      sync.Mutex
	max     int
	partial []byte
	buf     []string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.buf = append(t.buf, stripANSI(string(data[:i])))
		data = data[i+1:]
	}
	if len(t.buf) > t.max {
		t.buf = append([]string(nil), t.buf[len(t.buf)-t.max:]...)
	}
	t.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (t *tailWriter) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.buf...)
	if len(t.partial) > 0 {
		out = append(out, stripANSI(string(t.partial)))
	}
	if len(out) > t.max {
		out = out[len(out)-t.max:]
	}
	return out
}

func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
