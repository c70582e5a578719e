package image

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
)

// Progress receives the progress of long operations (pulls, unpacking, base creation).
type Progress interface {
	// Start begins a phase of total bytes (-1 when unknown).
	Start(what string, total int64)
	// Add reports n more bytes done in the current phase.
	Add(n int64)
	// Line reports a line of output of the operation.
	Line(s string)
	// Done ends the current phase.
	Done()
}

// NewProgress reports to w: a progress bar when w is a terminal, otherwise plain
// lines (a phase's start, every 10% and its end).
func NewProgress(w io.Writer) Progress {
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w}
}

type barProgress struct {
	mu  sync.Mutex
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *barProgress) Start(what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *barProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Add64(n)
	}
}

func (p *barProgress) Line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Clear()
	}
	fmt.Fprintln(p.w, s)
}

func (p *barProgress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}

type lineProgress struct {
	mu          sync.Mutex
	w           io.Writer
	what        string
	total, done int64
	step        int64
	start       time.Time
}

func (p *lineProgress) Start(what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.what, p.total, p.done, p.step, p.start = what, total, 0, 1, time.Now()
	if total > 0 {
		fmt.Fprintf(p.w, "%s: %s\n", what, humanBytes(total))
	} else {
		fmt.Fprintf(p.w, "%s\n", what)
	}
}

func (p *lineProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.total > 0 && p.done*10 >= p.step*p.total && p.step < 10 {
		fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", p.what, p.done*100/p.total, humanBytes(p.done), humanBytes(p.total))
		for p.done*10 >= p.step*p.total {
			p.step++
		}
	}
}

func (p *lineProgress) Line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, s)
}

func (p *lineProgress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s: done in %s\n", p.what, time.Since(p.start).Round(10*time.Millisecond))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

type nopProgress struct{}

func (nopProgress) Start(string, int64) {}
func (nopProgress) Add(int64)           {}
func (nopProgress) Line(string)         {}
func (nopProgress) Done()               {}

func (s *Store) progress() Progress {
	if s.Progress == nil {
		return nopProgress{}
	}
	return s.Progress
}

// countingReader reports bytes read to a Progress.
type countingReader struct {
	r io.Reader
	p Progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.p.Add(int64(n))
	}
	return n, err
}
