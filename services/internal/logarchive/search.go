package logarchive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Match is a log whose text matches a search: its first matching line.
type Match struct {
	Key  string `json:"key"`
	Line int    `json:"line"`
	Text string `json:"text"`
}

// Unreadable is a log a search could not read, and why.
type Unreadable struct {
	Key string `json:"key"`
	Err string `json:"error"`
}

// SearchResult is what a search found, both sorted by key.
type SearchResult struct {
	Matches    []Match      `json:"matches"`
	Unreadable []Unreadable `json:"unreadable,omitempty"`
}

// maxMatchText is how much of a matching line a Match keeps.
const maxMatchText = 300

// Search finds the logs of run under prefix (all with "") whose text re matches. A
// log that cannot be read is listed in Unreadable and the search goes on; ctx stops
// it. The logs are searched in parallel, one worker per CPU.
func (a *Archive) Search(ctx context.Context, run, prefix string, re *regexp.Regexp) (*SearchResult, error) {
	start := time.Now()
	keys, err := a.Keys(run, prefix)
	if err != nil {
		return nil, err
	}
	d, _ := a.runDir(run)
	workers := min(runtime.GOMAXPROCS(0), max(len(keys), 1))
	next := make(chan string)
	var (
		mu  sync.Mutex
		res SearchResult
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := a.decoders.Get().(*zstd.Decoder)
			defer a.decoders.Put(dec)
			var src, buf []byte
			for key := range next {
				var m *Match
				var bad error
				src, buf, m, bad = a.searchOne(dec, d, key, re, src, buf)
				var dc decodeError
				switch {
				case m == nil && bad == nil, errors.Is(bad, fs.ErrNotExist): // pruned or replaced meanwhile
					continue
				case errors.As(bad, &dc):
					bad = a.corrupt(run, key, dc.err)
				case bad != nil:
					bad = fmt.Errorf("log archive: %s %s: %w", run, key, bad)
				}
				mu.Lock()
				if m != nil {
					res.Matches = append(res.Matches, *m)
				} else {
					res.Unreadable = append(res.Unreadable, Unreadable{Key: key, Err: bad.Error()})
				}
				mu.Unlock()
			}
		}()
	}
	var stopped error
feed:
	for _, k := range keys {
		select {
		case next <- k:
		case <-ctx.Done():
			stopped = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if stopped != nil {
		return nil, fmt.Errorf("log archive: search of run %s: %w", run, stopped)
	}
	sort.Slice(res.Matches, func(i, j int) bool { return res.Matches[i].Key < res.Matches[j].Key })
	sort.Slice(res.Unreadable, func(i, j int) bool { return res.Unreadable[i].Key < res.Unreadable[j].Key })
	a.m.search.Observe(time.Since(start).Seconds())
	return &res, nil
}

// searchOne reads and searches one log, reusing src and buf.
func (a *Archive) searchOne(dec *zstd.Decoder, dir, key string, re *regexp.Regexp, src, buf []byte) ([]byte, []byte, *Match, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(key)+ext))
	if err != nil {
		return src, buf, nil, err
	}
	src, err = readAllInto(f, src[:0])
	f.Close()
	if err != nil {
		return src, buf, nil, err
	}
	if len(src) == 0 {
		return src, buf, nil, decodeError{errEmpty}
	}
	buf, err = dec.DecodeAll(src, buf[:0])
	if err != nil {
		return src, buf, nil, decodeError{err}
	}
	loc := re.FindIndex(buf)
	if loc == nil {
		return src, buf, nil, nil
	}
	from := bytes.LastIndexByte(buf[:loc[0]], '\n') + 1
	to := bytes.IndexByte(buf[loc[0]:], '\n')
	if to < 0 {
		to = len(buf)
	} else {
		to += loc[0]
	}
	from = max(from, loc[0]-maxMatchText/3)
	to = min(to, from+maxMatchText)
	text := string(bytes.TrimRight(buf[from:to], "\r"))
	return src, buf, &Match{Key: key, Line: bytes.Count(buf[:loc[0]], []byte{'\n'}) + 1, Text: text}, nil
}

// decodeError is a stored log that does not decompress.
type decodeError struct{ err error }

func (e decodeError) Error() string { return e.err.Error() }

func readAllInto(f *os.File, b []byte) ([]byte, error) {
	if st, err := f.Stat(); err == nil && int64(cap(b)) < st.Size()+1 {
		b = make([]byte, 0, st.Size()+1)
	}
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return b, nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}
