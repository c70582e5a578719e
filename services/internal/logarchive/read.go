package logarchive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Open reads the log of key in run as it was written (decompressed as it is read);
// a corrupt log's reader fails with an error wrapping ErrCorrupt.
func (a *Archive) Open(run, key string) (io.ReadCloser, error) {
	p, err := a.logPath(run, key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("log archive: %s %s: %w", run, key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("log archive: %s %s: %w", run, key, err)
	}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		f.Close()
		return nil, a.corrupt(run, key, errEmpty)
	}
	dec := a.decoders.Get().(*zstd.Decoder)
	if err := dec.Reset(f); err != nil {
		f.Close()
		a.decoders.Put(dec)
		return nil, a.corrupt(run, key, err)
	}
	return &logReader{a: a, run: run, key: key, f: f, dec: dec}, nil
}

// errEmpty is why an empty stored file is corrupt: a stored log has at least a frame.
var errEmpty = errors.New("empty file")

// Read is the log of key in run, up to limit bytes (all of it when limit <= 0), and
// whether that is all of it.
func (a *Archive) Read(run, key string, limit int64) ([]byte, bool, error) {
	rc, err := a.Open(run, key)
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	if limit <= 0 {
		b, err := io.ReadAll(rc)
		return b, true, err
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(b)) > limit {
		return b[:limit], false, nil
	}
	return b, true, nil
}

func (a *Archive) corrupt(run, key string, err error) error {
	a.m.corrupt.Inc()
	a.log.Warn("corrupt log", "run", run, "key", key, "err", err)
	return fmt.Errorf("log archive: %s %s: %w: %v", run, key, ErrCorrupt, err)
}

type logReader struct {
	a        *Archive
	run, key string
	f        *os.File
	dec      *zstd.Decoder
	err      error
}

func (r *logReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		r.err = r.a.corrupt(r.run, r.key, err)
		return n, r.err
	}
	return n, err
}

func (r *logReader) Close() error {
	if r.dec == nil {
		return nil
	}
	r.dec.Reset(nil)
	r.a.decoders.Put(r.dec)
	r.dec = nil
	return r.f.Close()
}

// Run is a run the archive holds.
type Run struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Runs lists the archive's runs, the newest first.
func (a *Archive) Runs() ([]Run, error) {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, fmt.Errorf("log archive: %w", err)
	}
	var runs []Run
	for _, e := range ents {
		if !e.IsDir() || CheckRun(e.Name()) != nil {
			continue
		}
		runs = append(runs, Run{Name: e.Name(), Created: a.created(e.Name())})
	}
	sort.Slice(runs, func(i, j int) bool {
		if !runs[i].Created.Equal(runs[j].Created) {
			return runs[i].Created.After(runs[j].Created)
		}
		return runs[i].Name > runs[j].Name
	})
	return runs, nil
}

// created is when run was begun: its stamp, or its directory's time when the stamp is
// missing or unreadable.
func (a *Archive) created(run string) time.Time {
	d := filepath.Join(a.dir, run)
	b, err := os.ReadFile(filepath.Join(d, createdFile))
	if err == nil {
		if t, err := ParseStamp(b); err == nil {
			return t
		}
	}
	a.log.Warn("run without a readable date, using its directory's", "run", run)
	if st, err := os.Stat(d); err == nil {
		return st.ModTime()
	}
	return time.Time{}
}

// ParseStamp reads a run's date as Begin writes it.
func ParseStamp(b []byte) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("run date %q: %w", b, err)
	}
	return t, nil
}

// Keys lists the keys of run's logs that start with prefix, sorted.
func (a *Archive) Keys(run, prefix string) ([]string, error) {
	d, err := a.runDir(run)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(d); err != nil {
		return nil, fmt.Errorf("log archive: run %s: %w", run, ErrNotFound)
	}
	start := d
	if i := strings.LastIndexByte(prefix, '/'); i > 0 && CheckKey(prefix[:i]) == nil {
		start = filepath.Join(d, filepath.FromSlash(prefix[:i]))
	}
	var keys []string
	err = filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if e.IsDir() || !strings.HasSuffix(p, ext) || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d, p)
		if err != nil {
			return err
		}
		if k := strings.TrimSuffix(filepath.ToSlash(rel), ext); strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("log archive: run %s: %w", run, err)
	}
	sort.Strings(keys)
	return keys, nil
}
