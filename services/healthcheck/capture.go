package healthcheck

import (
	"bytes"
	"fmt"
	"sync"
)

// The parts of a log a capture keeps: its start and its end.
const (
	captureHead = 64 << 10
	captureTail = 448 << 10
	// maxLine bounds the line the scan reads; a longer one is read in pieces.
	maxLine = 4 << 10
)

// capture is a writer that reads a build's log as it streams: it scans each line
// (Scan) and keeps the first captureHead and last captureTail bytes, whatever the
// size of the log, so a build printing gigabytes costs the service no more.
type capture struct {
	mu    sync.Mutex
	head  []byte
	tail  []byte // a ring of captureTail bytes once full
	at    int    // where the ring's next byte goes
	full  bool
	total int64
	line  []byte
	scan  Scan
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	c.total += int64(n)
	c.keep(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLine - len(c.line)
			if len(p) < room {
				c.line = append(c.line, p...)
				return n, nil
			}
			c.line = append(c.line, p[:room]...)
			c.flush()
			p = p[room:]
			continue
		}
		if len(c.line)+i <= maxLine {
			c.line = append(c.line, p[:i]...)
		}
		c.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (c *capture) flush() {
	c.scan.Line(bytes.TrimRight(c.line, "\r"))
	c.line = c.line[:0]
}

func (c *capture) keep(p []byte) {
	if n := min(len(p), captureHead-len(c.head)); n > 0 {
		c.head = append(c.head, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 {
		if !c.full {
			n := min(len(p), captureTail-len(c.tail))
			c.tail = append(c.tail, p[:n]...)
			p = p[n:]
			if len(c.tail) == captureTail {
				c.full, c.at = true, 0
			}
			continue
		}
		n := copy(c.tail[c.at:], p)
		c.at = (c.at + n) % captureTail
		p = p[n:]
	}
}

// Result returns what the log said and the log kept: all of it, or its start and
// end around a line saying how much was left out.
func (c *capture) Result() (Scan, []byte, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.line) > 0 {
		c.flush()
	}
	var out bytes.Buffer
	out.Write(c.head)
	if !c.full {
		out.Write(c.tail)
		return c.scan, out.Bytes(), c.total
	}
	if dropped := c.total - int64(len(c.head)) - captureTail; dropped > 0 {
		fmt.Fprintf(&out, "\n[kiln health-check: %d bytes of log left out; the log printed %d bytes in all]\n", dropped, c.total)
	}
	out.Write(c.tail[c.at:])
	out.Write(c.tail[:c.at])
	return c.scan, out.Bytes(), c.total
}
