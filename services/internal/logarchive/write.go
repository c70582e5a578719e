package logarchive

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// TruncationMarker starts the line that ends a log cut at the size limit.
const TruncationMarker = "[log archive: truncated"

// Writer writes one log into the archive; the log appears, whole, at Close. Writes
// beyond the archive's limit are counted and dropped.
type Writer struct {
	a        *Archive
	run, key string
	path     string
	f        *os.File
	enc      *zstd.Encoder
	kept     int64
	total    int64
	done     bool
}

// Create starts the log of key in run, replacing any earlier one at Close.
func (a *Archive) Create(run, key string) (*Writer, error) {
	p, err := a.logPath(run, key)
	if err != nil {
		return nil, err
	}
	if err := a.Begin(run); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("log archive: %s %s: %w", run, key, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("log archive: %s %s: %w", run, key, err)
	}
	enc := a.encoders.Get().(*zstd.Encoder)
	enc.Reset(f)
	return &Writer{a: a, run: run, key: key, path: p, f: f, enc: enc}, nil
}

// Write keeps what fits under the limit and counts the rest.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("log archive: %s %s: write after close", w.run, w.key)
	}
	n := len(p)
	w.total += int64(n)
	if room := w.a.opts.MaxLogBytes - w.kept; int64(len(p)) > room {
		p = p[:max(room, 0)]
	}
	if len(p) > 0 {
		if _, err := w.enc.Write(p); err != nil {
			return 0, fmt.Errorf("log archive: %s %s: %w", w.run, w.key, err)
		}
		w.kept += int64(len(p))
	}
	return n, nil
}

// Truncated says whether the log went beyond the limit.
func (w *Writer) Truncated() bool { return w.total > w.kept }

// Close ends the log (with the truncation line when it was cut) and puts it in place.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	if w.Truncated() {
		marker := fmt.Sprintf("\n%s at %d bytes of %d]\n", TruncationMarker, w.kept, w.total)
		if _, err := w.enc.Write([]byte(marker)); err != nil {
			w.Abort()
			return fmt.Errorf("log archive: %s %s: %w", w.run, w.key, err)
		}
	}
	err := w.enc.Close()
	w.finish()
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = w.f.Stat(); err == nil {
			size = st.Size()
		}
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.path)
	}
	if err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("log archive: %s %s: %w", w.run, w.key, err)
	}
	w.a.m.written.Inc()
	w.a.m.rawBytes.Add(float64(w.kept))
	w.a.m.storedBytes.Add(float64(size))
	if w.Truncated() {
		w.a.m.truncated.Inc()
		w.a.log.Warn("log truncated", "run", w.run, "key", w.key, "kept_bytes", w.kept, "total_bytes", w.total)
	}
	return nil
}

// Abort drops the log; an earlier log of the key stays.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.finish()
	w.f.Close()
	os.Remove(w.f.Name())
}

func (w *Writer) finish() {
	w.done = true
	w.enc.Reset(nil)
	w.a.encoders.Put(w.enc)
	w.enc = nil
}

// Put stores everything r gives as the log of key in run. Beyond the limit r is still
// read to its end (to count it) but nothing more is kept; ctx stops it.
func (a *Archive) Put(ctx context.Context, run, key string, r io.Reader) error {
	w, err := a.Create(run, key)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, ctxReader{ctx, r}); err != nil {
		w.Abort()
		return fmt.Errorf("log archive: %s %s: reading the log: %w", run, key, err)
	}
	return w.Close()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
