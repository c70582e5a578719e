package current

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/kiln-ci/kiln/internal/database"
)

// logStore keeps the jobs' logs: files in the state folder (fileLogs) or chunks in the
// engine's database (dbLogs), which every engine sharing the database can read.
type logStore interface {
	// appender opens job id's log for appending and returns the size it has already.
	appender(id int64) (io.WriteCloser, int64, error)
	// open opens job id's log for reading; fs.ErrNotExist when there is none.
	open(id int64) (logReader, error)
	// remove deletes job id's log; a missing log is not an error.
	remove(id int64) error
	// where names job id's log (its file, or its place in the database).
	where(id int64) string
	// shared reports whether other engines see the logs this one writes.
	shared() bool
}

// logReader reads a stored log.
type logReader interface {
	io.ReaderAt
	io.Closer
	// size is the number of bytes stored.
	size() (int64, error)
}

// fileLogs keeps each log in <dir>/<id/1000>/<id>.log.
type fileLogs struct{ dir string }

func (l *fileLogs) where(id int64) string {
	return filepath.Join(l.dir, fmt.Sprintf("%04d", id/1000), fmt.Sprintf("%d.log", id))
}

func (l *fileLogs) shared() bool { return false }

func (l *fileLogs) appender(id int64) (io.WriteCloser, int64, error) {
	path := l.where(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, 0, err
	}
	f, err := openLogFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (l *fileLogs) open(id int64) (logReader, error) {
	path := l.where(id)
	f, err := openLogFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return logFile{f}, nil
}

func (l *fileLogs) remove(id int64) error {
	if err := os.Remove(l.where(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

type logFile struct{ *os.File }

func (f logFile) size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// dbLogs keeps each write to a log as a row of job_logs at its byte offset.
type dbLogs struct{ db *database.DB }

func (l *dbLogs) where(id int64) string { return fmt.Sprintf("job_logs of job %d in %s", id, l.db) }

func (l *dbLogs) shared() bool { return true }

func (l *dbLogs) appender(id int64) (io.WriteCloser, int64, error) {
	r := &dbLog{l: l, id: id}
	n, err := r.size()
	if err != nil {
		return nil, 0, err
	}
	return &dbAppender{l: l, id: id, off: n}, n, nil
}

func (l *dbLogs) open(id int64) (logReader, error) { return &dbLog{l: l, id: id}, nil }

func (l *dbLogs) remove(id int64) error {
	if _, err := l.db.Exec(`DELETE FROM job_logs WHERE job_id = $1`, id); err != nil {
		return fmt.Errorf("delete the log of job %d: %w", id, err)
	}
	return nil
}

// dbAppender appends a chunk per Write.
type dbAppender struct {
	l   *dbLogs
	id  int64
	off int64
}

func (a *dbAppender) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := a.l.db.Exec(`INSERT INTO job_logs (job_id, off, data) VALUES ($1, $2, $3)`, a.id, a.off, p); err != nil {
		return 0, fmt.Errorf("append to the log of job %d at %d: %w", a.id, a.off, err)
	}
	a.off += int64(len(p))
	return len(p), nil
}

func (a *dbAppender) Close() error { return nil }

// dbLog reads one job's chunks, keeping the last one read so that small reads in a
// row cost one query per chunk.
type dbLog struct {
	l  *dbLogs
	id int64

	mu    sync.Mutex
	at    int64
	chunk []byte
}

func (r *dbLog) Close() error { return nil }

func (r *dbLog) size() (int64, error) {
	var n int64
	err := r.l.db.QueryRow(`SELECT COALESCE(MAX(off + length(data)), 0) FROM job_logs WHERE job_id = $1`, r.id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("size of the log of job %d: %w", r.id, err)
	}
	return n, nil
}

// cached copies what the last chunk read holds of p at off.
func (r *dbLog) cached(p []byte, off int64) int {
	if off < r.at || off >= r.at+int64(len(r.chunk)) {
		return 0
	}
	return copy(p, r.chunk[off-r.at:])
}

func (r *dbLog) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.cached(p, off)
	if n == len(p) {
		return n, nil
	}
	rows, err := r.l.db.QueryContext(context.Background(), `SELECT off, data FROM job_logs WHERE job_id = $1
		AND off >= (SELECT COALESCE(MAX(off), 0) FROM job_logs WHERE job_id = $1 AND off <= $2) AND off < $3 ORDER BY off`,
		r.id, off+int64(n), off+int64(len(p)))
	if err != nil {
		return n, fmt.Errorf("read the log of job %d: %w", r.id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var at int64
		var data []byte
		if err := rows.Scan(&at, &data); err != nil {
			return n, fmt.Errorf("read the log of job %d: %w", r.id, err)
		}
		pos := off + int64(n)
		if at+int64(len(data)) <= pos {
			continue // the chunk ends before pos: pos is beyond the end
		}
		if at > pos {
			return n, fmt.Errorf("log of job %d has a gap at byte %d", r.id, pos)
		}
		r.at, r.chunk = at, data
		n += r.cached(p[n:], pos)
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read the log of job %d: %w", r.id, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
