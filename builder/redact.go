package builder

import (
	"bytes"
	"io"
	"slices"
	"sync"
)

// RedactMask replaces secret values in build logs.
const RedactMask = "***"

// minRedact is the shortest value redacted: shorter ones would mask ordinary output
// everywhere without hiding anything worth hiding.
const minRedact = 4

// Redactor passes writes on with every occurrence of the secret values replaced by
// RedactMask, including values split across writes: output that may be the start of a
// value is held back until the next write tells, or Flush. It is safe for concurrent
// use.
type Redactor struct {
	mu      sync.Mutex
	w       io.Writer
	values  [][]byte // longest first
	first   [256]bool
	pending []byte
}

// NewRedactor returns a Redactor writing to w that hides the value of each secret, the
// value without surrounding blanks, and each line of a multi-line value (values shorter
// than 4 bytes are left alone).
func NewRedactor(w io.Writer, secrets map[string][]byte) *Redactor {
	r := &Redactor{w: w}
	add := func(v []byte) {
		v = bytes.TrimSpace(v)
		if len(v) >= minRedact && !slices.ContainsFunc(r.values, func(x []byte) bool { return bytes.Equal(x, v) }) {
			r.values = append(r.values, v)
			r.first[v[0]] = true
		}
	}
	for _, v := range secrets {
		add(v)
		for _, l := range bytes.Split(v, []byte("\n")) {
			add(l)
		}
	}
	slices.SortFunc(r.values, func(a, b []byte) int { return len(b) - len(a) })
	return r
}

// Write redacts p (with what was held back before) and writes what is certain.
func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.values) == 0 {
		return r.w.Write(p)
	}
	r.pending = append(r.pending, p...)
	out, held := r.redact(r.pending, false)
	r.pending = append(r.pending[:0], held...)
	if len(out) > 0 {
		if _, err := r.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what is held back (redacted), at the end of the output.
func (r *Redactor) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	out, _ := r.redact(r.pending, true)
	r.pending = r.pending[:0]
	_, err := r.w.Write(out)
	return err
}

// redact returns buf with the values masked and, unless final, the tail of buf that
// may be the start of a value, held back.
func (r *Redactor) redact(buf []byte, final bool) (out, held []byte) {
	out = make([]byte, 0, len(buf))
	for i := 0; i < len(buf); {
		if !r.first[buf[i]] {
			out = append(out, buf[i])
			i++
			continue
		}
		matched, partial := 0, false
		for _, v := range r.values {
			if bytes.HasPrefix(buf[i:], v) {
				matched = len(v)
				break
			}
			if !final && len(buf)-i < len(v) && bytes.HasPrefix(v, buf[i:]) {
				partial = true
			}
		}
		switch {
		case matched > 0:
			out = append(out, RedactMask...)
			i += matched
		case partial:
			return out, buf[i:]
		default:
			out = append(out, buf[i])
			i++
		}
	}
	return out, nil
}
