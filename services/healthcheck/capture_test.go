package healthcheck

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// lines is a reader of n bytes of numbered lines, then a last line.
type lines struct {
	n, done int64
	last    string
	buf     []byte
}

func (l *lines) Read(p []byte) (int, error) {
	if l.done >= l.n {
		if l.last == "" {
			return 0, io.EOF
		}
		n := copy(p, l.last)
		l.last = l.last[n:]
		return n, nil
	}
	if len(l.buf) == 0 {
		l.buf = []byte(fmt.Sprintf("%-1023d\n", l.done))
	}
	n := copy(p, l.buf[:min(int64(len(l.buf)), l.n-l.done)])
	l.buf = l.buf[n:]
	l.done += int64(n)
	return n, nil
}

func TestCapture(t *testing.T) {
	for _, c := range []struct {
		name   string
		size   int64
		whole  bool
		marker bool
	}{
		{"small log kept whole", 10 << 10, true, true},
		{"just over what is kept", captureHead + captureTail + 4096, false, true},
		{"a gigabyte", 1 << 30, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.size > 100<<20 && testing.Short() {
				t.Skip("streams a gigabyte through the capture")
			}
			last := markerPrefix + "build foo.1.0 (exit 31)\n"
			src := &lines{n: c.size, last: last}
			cap := &capture{}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			if _, err := io.CopyBuffer(cap, src, make([]byte, 32<<10)); err != nil {
				t.Fatal(err)
			}
			scan, log, total := cap.Result()
			if total != c.size+int64(len(last)) {
				t.Errorf("counted %d bytes, want %d", total, c.size+int64(len(last)))
			}
			if c.whole && int64(len(log)) != total {
				t.Errorf("kept %d of %d bytes of a small log", len(log), total)
			}
			if !c.whole {
				if len(log) > captureHead+captureTail+200 {
					t.Errorf("kept %d bytes of a log of %d", len(log), total)
				}
				if !bytes.Contains(log, []byte("bytes of log left out")) {
					t.Errorf("no line says the log was cut")
				}
			}
			if !bytes.HasPrefix(log, []byte("0 ")) || !strings.HasSuffix(string(log), last) {
				t.Errorf("the start or the end of the log was not kept: %q … %q", log[:20], log[len(log)-80:])
			}
			if c.marker && (scan.Step != stepBuild || scan.Exit != 31) {
				t.Errorf("scan %+v: the failure line at the end was not read", scan)
			}
		})
	}
}

// FuzzCapture: however a log is cut into writes, the capture reads the same lines as
// a scan of the whole log and keeps a small log whole.
func FuzzCapture(f *testing.F) {
	f.Add([]byte("a\n"+markerPrefix+"build foo.1 (exit 31)\n#=== ERROR while installing bar.2 ===#\n"), uint8(3))
	f.Add([]byte("no newline at the end"), uint8(1))
	f.Fuzz(func(t *testing.T, log []byte, step uint8) {
		n := int(step)%17 + 1
		cap := &capture{}
		for i := 0; i < len(log); i += n {
			cap.Write(log[i:min(i+n, len(log))])
		}
		scan, kept, total := cap.Result()
		if total != int64(len(log)) || !bytes.Equal(kept, log) {
			t.Fatalf("kept %q of %q", kept, log)
		}
		var whole Scan
		for _, l := range strings.Split(string(log), "\n") {
			if len(l) > maxLine {
				continue // read in pieces: compared only for lines of ordinary length
			}
			whole.Line([]byte(strings.TrimRight(l, "\r")))
		}
		if len(log) < maxLine && (scan.Step != whole.Step || scan.Exit != whole.Exit || len(scan.Failed) != len(whole.Failed)) {
			t.Errorf("written in pieces of %d: %+v; whole: %+v", n, scan, whole)
		}
	})
}
