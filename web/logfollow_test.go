package web

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
)

// follower reads a page log stream from the start of a line and hashes the line's text.
type follower struct {
	line     int
	received atomic.Int64
	sum      [sha256.Size]byte
	err      error
	done     chan struct{}
}

var htmlTag = regexp.MustCompile(`<[^>]*>`)

func (f *follower) read(resp *http.Response) {
	defer close(f.done)
	defer resp.Body.Close()
	h := sha256.New()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	event, ended := "", false
	for sc.Scan() {
		if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			event = e
			continue
		}
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		switch event {
		case "done":
			copy(f.sum[:], h.Sum(nil))
			return
		case "line":
			var l logLine
			if err := json.Unmarshal([]byte(d), &l); err != nil {
				f.err = err
				return
			}
			if l.N > f.line && !ended {
				f.err = fmt.Errorf("line %d before line %d ended", l.N, f.line)
				return
			}
			if l.N == f.line {
				text := html.UnescapeString(htmlTag.ReplaceAllString(string(l.HTML), ""))
				h.Write([]byte(text))
				f.received.Add(int64(len(text)))
				ended = !l.More
			}
		}
	}
	f.err = fmt.Errorf("stream ended without a done event (%v)", sc.Err())
}

func heapAlloc() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// A job printing a long line without a newline is followed in parts: what each follower
// holds is bounded, and the parts together are the whole line.
func TestLongLineFollowersHoldLittle(t *testing.T) {
	cases := []struct {
		name      string
		followers int
		chunks    int // written one after another, without a newline
		chunk     func(i int) (written, text string)
	}{
		{"24 MB of text, 6 followers", 6, 24, func(i int) (string, string) {
			s := strings.Repeat(fmt.Sprintf("chunk %04d of a line that never ends ", i), 1<<20/40)
			return s, s
		}},
		{"colours and characters of several bytes, 3 followers", 3, 4, func(i int) (string, string) {
			unit := fmt.Sprintf("\x1b[3%dmgrün %d € <&>\x1b[0m 😀 ", i%8, i)
			n := (1 << 20) / len(unit)
			return strings.Repeat(unit, n), strings.Repeat(fmt.Sprintf("grün %d € <&> 😀 ", i), n)
		}},
	}
	// Followers holding the line whole would take a multiple of its size; held in parts,
	// the heap (of the server and the followers both) grows by a few MB.
	const heapBound = 64 << 20
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newConsole(t, "raw-long")
			id := c.jobOf("raw-long", current.JobRunning)
			url, line := c.followURL(id)
			base := heapAlloc()
			fs := make([]*follower, tc.followers)
			for i := range fs {
				resp, err := http.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				fs[i] = &follower{line: line, done: make(chan struct{})}
				go fs[i].read(resp)
			}
			want := sha256.New()
			total := int64(0)
			for i := range tc.chunks {
				w, text := tc.chunk(i)
				c.lines <- w
				want.Write([]byte(text))
				total += int64(len(text))
			}
			// Every follower gets all but the last part while the line goes on; what the
			// server holds meanwhile stays within the bound.
			var mu sync.Mutex
			grew := int64(0)
			c.waitFor("the followers to receive the line so far", func() bool {
				g := heapAlloc() - base
				mu.Lock()
				grew = max(grew, g)
				mu.Unlock()
				if g > heapBound {
					t.Fatalf("heap grew by %d MB with %d followers of a %d MB line: the line is held whole", g>>20, tc.followers, total>>20)
				}
				for _, f := range fs {
					if f.err != nil || f.received.Load() < total-maxLinePart {
						return f.err != nil
					}
				}
				return true
			})
			t.Logf("heap grew by at most %.1f MB while %d followers read a %d MB line", float64(grew)/(1<<20), tc.followers, total>>20)
			c.lines <- "\n"
			close(c.lines)
			for _, f := range fs {
				select {
				case <-f.done:
				case <-time.After(time.Minute):
					t.Fatal("a follower got no done event")
				}
				if f.err != nil {
					t.Fatal(f.err)
				}
				if got := f.received.Load(); got != total || !bytes.Equal(f.sum[:], want.Sum(nil)) {
					t.Fatalf("a follower received %d bytes of text (want %d) or other text than written", got, total)
				}
			}
		})
	}
}
