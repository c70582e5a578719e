package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// heartbeat is how often an idle event stream sends a comment so proxies keep it open.
const heartbeat = 15 * time.Second

// sse writes server-sent events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func startSSE(w http.ResponseWriter) (*sse, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, fmt.Errorf("event stream: response writer cannot flush")
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &sse{w, f}, nil
}

// send writes one event whose data is v as JSON; it does not flush.
func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b)
	return err
}

func (s *sse) flush() { s.f.Flush() }

func (s *sse) comment() error {
	_, err := s.w.Write([]byte(": keep-alive\n\n"))
	s.f.Flush()
	return err
}

// changeEvents sends a "changed" event whenever the graph or a job changes, at most
// a few times a second.
func (s *Server) changeEvents(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	ev, err := startSSE(w)
	if err != nil {
		return err
	}
	s.followers.Inc()
	defer s.followers.Dec()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		ch := s.eng.Changed()
		select {
		case <-r.Context().Done():
			return nil
		case <-tick.C:
			if ev.comment() != nil {
				return nil
			}
		case <-ch:
			if ev.send("changed", map[string]int64{"at": time.Now().UnixMilli()}) != nil {
				return nil
			}
			ev.flush()
			select {
			case <-r.Context().Done():
				return nil
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

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
	if _, err := s.eng.Job(r.Context(), id); err != nil {
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
	for {
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
// stream sends "data" events {offset, text} of raw text. Both end with a "done" event
// carrying the job's final state.
func (s *Server) logEvents(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	p, err := logParams(r, "offset", "line")
	if err != nil {
		return err
	}
	if _, err := s.eng.Job(r.Context(), id); err != nil {
		return jobErr(id, err)
	}
	ev, err := startSSE(w)
	if err != nil {
		return err
	}
	s.followers.Inc()
	defer s.followers.Dec()
	off := p["offset"]
	lineNo := int(p["line"])
	if lineNo < 1 {
		lineNo = 1
	}
	var pending []byte
	var ar ANSIRenderer
	ctx := r.Context()
	sendLine := func(line []byte) error {
		err := ev.send("line", logLine{N: lineNo, HTML: htmlString(ar.Line(line))})
		lineNo++
		return err
	}
	lastBeat := time.Now()
	for {
		ch, err := s.eng.ReadLog(ctx, id, off, 256<<10)
		if err != nil {
			ev.send("error", map[string]string{"error": err.Error()})
			ev.flush()
			return nil
		}
		if len(ch.Data) > 0 {
			if c.api {
				if ev.send("data", map[string]any{"offset": off, "next": ch.Next, "text": string(ch.Data)}) != nil {
					return nil
				}
			} else {
				pending = append(pending, ch.Data...)
				for {
					i := bytes.IndexByte(pending, '\n')
					if i < 0 {
						break
					}
					if sendLine(pending[:i]) != nil {
						return nil
					}
					pending = pending[i+1:]
				}
				pending = append([]byte(nil), pending...)
			}
			off = ch.Next
			ev.flush()
			lastBeat = time.Now()
			continue
		}
		if ch.Done {
			if len(pending) > 0 && !c.api {
				sendLine(pending)
			}
			st := State("")
			if j, err := s.eng.Job(ctx, id); err == nil {
				st = j.State
			}
			ev.send("done", map[string]any{"offset": off, "state": st})
			ev.flush()
			return nil
		}
		if time.Since(lastBeat) >= heartbeat {
			if ev.comment() != nil {
				return nil
			}
			lastBeat = time.Now()
		}
		wctx, cancel := contextWithTimeout(ctx, heartbeat)
		err = s.eng.WaitLog(wctx, id, off)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}
