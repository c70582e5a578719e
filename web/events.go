package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// heartbeat is how often an idle event stream sends a comment so proxies keep it open.
const heartbeat = 15 * time.Second

// sse writes server-sent events.
type sse struct {
	w  http.ResponseWriter
	f  http.Flusher
	rc *http.ResponseController
}

// startSSE starts an event stream, which lasts beyond the server's read and write
// timeouts: every write extends its own deadline.
func startSSE(w http.ResponseWriter) (*sse, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, fmt.Errorf("event stream: response writer cannot flush")
	}
	rc := http.NewResponseController(w)
	// Where the server does not support deadlines, it has none to extend.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &sse{w, f, rc}, nil
}

// extend moves the write deadline on before a write.
func (s *sse) extend() { _ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) }

// send writes one event whose data is v as JSON; it does not flush.
func (s *sse) send(event string, v any) error { return s.sendID(event, "", v) }

// sendID writes one event with an id, which a reconnecting EventSource sends back in
// the Last-Event-ID header.
func (s *sse) sendID(event, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.extend()
	if id != "" {
		_, err = fmt.Fprintf(s.w, "id: %s\nevent: %s\ndata: %s\n\n", id, event, b)
	} else {
		_, err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b)
	}
	return err
}

func (s *sse) flush() { s.f.Flush() }

func (s *sse) comment() error {
	s.extend()
	_, err := s.w.Write([]byte(": keep-alive\n\n"))
	s.f.Flush()
	return err
}

// changeEvents sends a "changed" event whenever the graph or a job changes, at most
// once a second.
func (s *Server) changeEvents(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	changes, unsubscribe := s.eng.Subscribe()
	defer unsubscribe()
	ev, err := startSSE(w)
	if err != nil {
		return err
	}
	s.followers.Inc()
	defer s.followers.Dec()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-tick.C:
			if ev.comment() != nil {
				return nil
			}
		case <-changes:
			if ev.send("changed", map[string]int64{"at": time.Now().UnixMilli()}) != nil {
				return nil
			}
			ev.flush()
			select {
			case <-r.Context().Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// maxLinePart bounds the part of a line a log follower holds while waiting for its end:
// longer lines are sent in parts of at most this many bytes.
const maxLinePart = 64 << 10

// splitPoint returns where to cut rest, a line longer than max bytes, at most max bytes
// in: not inside a character encoded in UTF-8, nor inside an escape sequence.
func splitPoint(rest []byte, max int) int {
	n := max
	for k := 0; k < utf8.UTFMax-1 && !utf8.RuneStart(rest[n]); k++ {
		n--
	}
	if !utf8.RuneStart(rest[n]) {
		n = max // not UTF-8 anyway
	}
	if i := bytes.LastIndexByte(rest[:n], 0x1b); i > 0 && n-i < 32 && !bytes.ContainsFunc(rest[i+1:n], isFinalByte) {
		n = i
	}
	return n
}

// isFinalByte reports whether r ends an escape sequence.
func isFinalByte(r rune) bool { return r >= 0x40 && r <= 0x7e && r != '[' }

// logParams reads the offset (and, for the rendered stream, line) query parameters.
func logParams(r *http.Request, names ...string) (map[string]int64, error) {
	if err := onlyParams(r, names...); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	q := r.URL.Query()
	for _, n := range names {
		v := q.Get(n)
		if v == "" {
			continue
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil || x < 0 {
			return nil, httpErr(http.StatusBadRequest, "bad query parameter %s=%q: want a whole number, 0 or more", n, v)
		}
		out[n] = x
	}
	return out, nil
}

// rawLog serves a job's log as plain text: all of it on /job/<id>/log; on the API twin,
// at most max bytes from offset, with the next offset and whether the log is complete in
// the X-Kiln-Log-Next and X-Kiln-Log-Done headers.
func (s *Server) rawLog(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	p, err := logParams(r, "offset", "max")
	if err != nil {
		return err
	}
	if _, _, err := s.eng.Job(r.Context(), id); err != nil {
		return jobErr(id, err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if c.api {
		max := int(p["max"])
		if max <= 0 || max > 4<<20 {
			max = 1 << 20
		}
		ch, err := s.eng.ReadLog(r.Context(), id, p["offset"], max)
		if err != nil {
			return jobErr(id, err)
		}
		w.Header().Set("X-Kiln-Log-Next", strconv.FormatInt(ch.Next, 10))
		w.Header().Set("X-Kiln-Log-Done", strconv.FormatBool(ch.Done))
		_, err = w.Write(ch.Data)
		return err
	}
	off := p["offset"]
	wrote := false
	rc := http.NewResponseController(w)
	for {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		ch, err := s.eng.ReadLog(r.Context(), id, off, 1<<20)
		if err != nil {
			if wrote {
				return nil
			}
			return jobErr(id, err)
		}
		if len(ch.Data) > 0 {
			wrote = true
			if _, err := w.Write(ch.Data); err != nil {
				return nil
			}
		}
		off = ch.Next
		if ch.Done || len(ch.Data) == 0 {
			return nil
		}
	}
}

// logEvents streams a job's log as server-sent events from an offset. The page stream
// (/job/<id>/log/events) sends "line" events of rendered HTML lines {n, html}; the API
// stream sends "data" events {offset, next, text} of raw text. Both end with a "done"
// event carrying the job's final state, or a "failure" event if the log cannot be read.
// Event ids let a reconnecting client resume where it stopped.
func (s *Server) logEvents(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	p, err := logParams(r, "offset", "line")
	if err != nil {
		return err
	}
	// A reconnecting EventSource resumes after the last event it received.
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		o, l, hasLine := strings.Cut(last, ":")
		n, err1 := strconv.ParseInt(o, 10, 64)
		m, err2 := strconv.ParseInt(l, 10, 64)
		if err1 != nil || n < 0 || hasLine != !c.api || hasLine && (err2 != nil || m < 1) {
			return httpErr(http.StatusBadRequest, "bad Last-Event-ID header %q", last)
		}
		p["offset"], p["line"] = n, m
	}
	ctx := r.Context()
	if _, _, err := s.eng.Job(ctx, id); err != nil {
		return jobErr(id, err)
	}
	off := p["offset"]
	rd, err := s.eng.FollowLog(ctx, id, off)
	if err != nil {
		return jobErr(id, err)
	}
	ev, err := startSSE(w)
	if err != nil {
		rd.Close()
		return err
	}
	s.followers.Inc()
	defer s.followers.Dec()

	// The reader blocks while the job is quiet, so it runs in its own goroutine, which
	// ends when the log does or when ctx (the request) ends, and closes the reader.
	type chunk struct {
		data []byte
		err  error
	}
	chunks := make(chan chunk)
	follow := func(rd io.ReadCloser) {
		defer rd.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := rd.Read(buf)
			select {
			case chunks <- chunk{bytes.Clone(buf[:n]), err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}
	go follow(rd)

	lineNo := max(int(p["line"]), 1)
	var pending []byte
	var ar ANSIRenderer
	// sendLine sends a line that ends at byte offset end, and the next line's number.
	sendLine := func(line []byte, end int64) error {
		eid := fmt.Sprintf("%d:%d", end, lineNo+1)
		err := ev.sendID("line", eid, logLine{N: lineNo, HTML: htmlString(ar.Line(line))})
		lineNo++
		return err
	}
	// sendPart sends the start of a line longer than maxLinePart, which goes on in the
	// next event of the same number, so that a follower holds at most that much.
	sendPart := func(part []byte, end int64) error {
		eid := fmt.Sprintf("%d:%d", end, lineNo)
		return ev.sendID("line", eid, logLine{N: lineNo, HTML: htmlString(ar.Line(part)), More: true})
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		var ch chunk
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if ev.comment() != nil {
				return nil
			}
			continue
		case ch = <-chunks:
		}
		if len(ch.data) > 0 {
			if c.api {
				next := off + int64(len(ch.data))
				if ev.sendID("data", strconv.FormatInt(next, 10), map[string]any{"offset": off, "next": next, "text": string(ch.data)}) != nil {
					return nil
				}
			} else {
				base := off - int64(len(pending)) // offset of pending[0]
				pending = append(pending, ch.data...)
				start := 0
				for {
					i := bytes.IndexByte(pending[start:], '\n')
					if i < 0 {
						break
					}
					if sendLine(pending[start:start+i], base+int64(start+i+1)) != nil {
						return nil
					}
					start += i + 1
				}
				for len(pending)-start > maxLinePart {
					n := splitPoint(pending[start:], maxLinePart)
					if sendPart(pending[start:start+n], base+int64(start+n)) != nil {
						return nil
					}
					start += n
				}
				pending = append(pending[:0], pending[start:]...)
			}
			off += int64(len(ch.data))
		}
		switch {
		case ch.err == io.EOF:
			st := State("")
			if j, _, err := s.eng.Job(ctx, id); err == nil {
				st = j.State
			}
			if st.Active() {
				// The log ended before the job did (it had not opened its log yet):
				// follow it again in a moment.
				ev.flush()
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
				rd, err := s.eng.FollowLog(ctx, id, off)
				if err != nil {
					ev.send("failure", map[string]string{"error": err.Error()})
					ev.flush()
					return nil
				}
				go follow(rd)
				continue
			}
			if len(pending) > 0 && !c.api {
				sendLine(pending, off)
			}
			ev.send("done", map[string]any{"offset": off, "state": st})
			ev.flush()
			return nil
		case ch.err != nil:
			if ctx.Err() == nil {
				ev.send("failure", map[string]string{"error": ch.err.Error()})
				ev.flush()
			}
			return nil
		}
		ev.flush()
	}
}
