package fleetjob

import (
	"bytes"
	"strings"
	"sync"
)

// FailingLines picks the lines of a failed log that explain it: those that look like
// errors and their neighbours, or else the last lines; at most 20.
func FailingLines(lines []string) []string {
	var keep []string
	for i, l := range lines {
		low := strings.ToLower(l)
		if strings.Contains(low, "error") || strings.Contains(low, "fail") || strings.Contains(low, "exception") {
			from := max(0, i-2)
			for _, k := range lines[from : i+1] {
				if len(keep) == 0 || keep[len(keep)-1] != k {
					keep = append(keep, k)
				}
			}
		}
	}
	if len(keep) == 0 {
		keep = lines
	}
	if len(keep) > 20 {
		keep = keep[len(keep)-20:]
	}
	return keep
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
