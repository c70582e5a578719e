package cluster

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/minio/highwayhash"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDamagedStoreReportedAtStart makes a real store (makeStore), stops it, damages a stream's metadata or a block, and starts again:
// the start repairs the fleet's streams and logs it, or fails naming the damaged file.
func TestDamagedStoreReportedAtStart(t *testing.T) {
	streamDir := func(dir, stream string) string {
		return filepath.Join(dir, "nats", "jetstream", "$G", "streams", stream)
	}
	garbage := func(path string) error { return os.WriteFile(path, []byte("garbage{{{\x00\xff"), 0o640) }
	jobs, other := "KV_"+bucketJobs, "OTHER" // see makeStore
	tests := []struct {
		name     string
		stream   string
		file     string // in the stream's folder
		damage   func(string) error
		wantErr  bool   // the start fails, naming the file
		wantLog  string // logged, with the path of named (default file)
		named    string
		jobsKept int // of the three jobs, the first this many are still known
	}{
		{"intact", jobs, "meta.inf", func(string) error { return nil }, false, "", "", 3},
		{"garbage in the jobs stream's meta.inf", jobs, "meta.inf", garbage, false, "stream metadata damaged", "", 3},
		{"meta.inf of the jobs stream missing", jobs, "meta.inf", os.Remove, false, "stream metadata damaged", "", 3},
		{"meta.sum of the jobs stream changed", jobs, "meta.sum", garbage, false, "stream metadata damaged", "meta.inf", 3},
		{"garbage in a jobs block", jobs, "msgs/1.blk", damageTail, false, "message block damaged", "", 2},
		{"garbage in another stream's meta.inf", other, "meta.inf", garbage, true, "", "", 0},
		{"garbage in another stream's block", other, "msgs/1.blk", damageTail, true, "", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := makeStore(t, dir)
			path := filepath.Join(streamDir(dir, tc.stream), tc.file)
			if err := tc.damage(path); err != nil {
				t.Fatal(err)
			}

			var logs testenv.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			type started struct {
				f   *Fleet
				err error
			}
			ch := make(chan started, 1)
			go func() {
				f, err := StartEmbedded(ctx, Options{StateDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				ch <- started{f, err}
			}()
			var s started
			select {
			case s = <-ch:
			case <-ctx.Done():
				t.Fatalf("start did not return; log:\n%s", logs.String())
			}
			if tc.wantErr {
				if s.err == nil {
					s.f.Close()
					t.Fatalf("started on a damaged store; log:\n%s", logs.String())
				}
				if !strings.Contains(s.err.Error(), path) {
					t.Fatalf("error does not name %s: %v", path, s.err)
				}
				return
			}
			if s.err != nil {
				t.Fatal(s.err)
			}
			defer s.f.Close()
			if tc.wantLog == "" {
				if strings.Contains(logs.String(), "repaired") {
					t.Fatalf("intact store repaired:\n%s", logs.String())
				}
			} else if named := filepath.Join(streamDir(dir, tc.stream), cmp.Or(tc.named, tc.file)); !strings.Contains(logs.String(), tc.wantLog) || !strings.Contains(logs.String(), named) {
				t.Fatalf("log does not report %q at %s:\n%s", tc.wantLog, named, logs.String())
			}
			for i, id := range ids[:tc.jobsKept] {
				if _, err := s.f.Client.Job(ctx, id); err != nil {
					t.Errorf("job %d of 3 lost: %v", i+1, err)
				}
			}
		})
	}
}

// makeStore writes a fleet's store in dir: three queued jobs, and a stream OTHER (not the
// fleet's) with two messages. It returns the jobs' ids.
func makeStore(t *testing.T, dir string) []string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(&testenv.Buffer{}, nil))
	f, err := StartEmbedded(context.Background(), Options{StateDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	for range 3 {
		j, err := f.Client.Submit(context.Background(), Request{Pool: "linux-x86_64", Client: "t", Spec: "true"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	js, _ := jetstream.New(f.nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := js.Publish(context.Background(), "other.x", []byte("a message of another stream")); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// damageTail flips bytes of a block's last record: the records before it stay good.
func damageTail(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for i := len(b) - 20; i < len(b)-10; i++ {
		b[i] ^= 0x5a
	}
	return os.WriteFile(path, b, 0o640)
}

// TestSchedulerLoadStallIsAnError starts a scheduler on a damaged store that NATS serves
// unchecked (as an external NATS would): the jobs bucket announces a record it never
// delivers, and the start fails saying so instead of waiting forever.
func TestSchedulerLoadStallIsAnError(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	if err := damageTail(filepath.Join(dir, "nats", "jetstream", "$G", "streams", "KV_"+bucketJobs, "msgs", "1.blk")); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { loadStall = d }(loadStall)
	loadStall = time.Second
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Connect(ctx, ConnOptions{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := StartScheduler(ctx, nc, SchedulerOptions{Pools: DefaultPools, Logger: slog.New(slog.NewTextHandler(&testenv.Buffer{}, nil))})
	if err == nil {
		s.Stop()
		t.Fatal("scheduler started on a bucket that does not deliver its records")
	}
	if !strings.Contains(err.Error(), "may be damaged") {
		t.Fatalf("error: %v", err)
	}
}

// TestFirstBadRecordOnAWrittenStore checks every block of a store the fleet wrote (job
// records, logs with headers, deletions): none has a bad record.
func TestFirstBadRecordOnAWrittenStore(t *testing.T) {
	tf := newTestFleet(t, Options{})
	startInProcessWorker(t, tf, "w1")
	for _, spec := range []string{"echo one", "echo two; exit 3"} {
		tf.wait(tf.submit(Request{Spec: spec}).ID)
	}
	tf.f.Close()
	tf.f = nil
	blocks, _ := filepath.Glob(filepath.Join(tf.dir, "nats", "jetstream", "*", "streams", "*", "msgs", "*.blk"))
	if len(blocks) == 0 {
		t.Fatal("no blocks written")
	}
	for _, blk := range blocks {
		stream := filepath.Base(filepath.Dir(filepath.Dir(blk)))
		t.Run(stream+"/"+filepath.Base(blk), func(t *testing.T) {
			b, err := os.ReadFile(blk)
			if err != nil {
				t.Fatal(err)
			}
			if off, why := firstBadRecord(b, stream+"-"+strings.TrimSuffix(filepath.Base(blk), ".blk")); off >= 0 {
				t.Fatalf("bad record at %d of %d bytes: %s", off, len(b), why)
			}
		})
	}
}

// appendRecord appends one message record of a block of stream-index hashKey, in the
// file store's format.
func appendRecord(b []byte, hashKey string, seq uint64, subj string, hdr, msg []byte) []byte {
	le := binary.LittleEndian
	rl := uint32(recordHeader + len(subj) + len(msg) + recordHash)
	if hdr != nil {
		rl += uint32(4 + len(hdr))
	}
	head := make([]byte, recordHeader)
	le.PutUint32(head[0:], rl)
	if hdr != nil {
		le.PutUint32(head[0:], rl|recordHdrBit)
	}
	le.PutUint64(head[4:], seq)
	le.PutUint64(head[12:], uint64(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()))
	le.PutUint16(head[20:], uint16(len(subj)))
	key := sha256.Sum256([]byte(hashKey))
	hh, _ := highwayhash.New64(key[:])
	hh.Write(head[4:20])
	hh.Write([]byte(subj))
	hh.Write(hdr)
	hh.Write(msg)
	b = append(b, head...)
	b = append(b, subj...)
	if hdr != nil {
		b = le.AppendUint32(b, uint32(len(hdr)))
		b = append(b, hdr...)
	}
	b = append(b, msg...)
	return hh.Sum(b)
}

// FuzzFirstBadRecord appends arbitrary bytes to good records: the check never panics and
// never finds fault with the good records before them.
func FuzzFirstBadRecord(f *testing.F) {
	const key = "KV_KILN_FLEET_JOBS-1"
	good := appendRecord(nil, key, 1, "$KV.KILN_FLEET_JOBS.a", nil, []byte(`{"id":"a"}`))
	good = appendRecord(good, key, 2, "kiln.fleet.log.a", []byte("NATS/1.0\r\nKiln-Attempt: 1\r\n\r\n"), []byte("log"))
	f.Add([]byte{})
	f.Add(good[:30])
	f.Add(appendRecord(nil, key, 3, "x", nil, nil))
	f.Fuzz(func(t *testing.T, tail []byte) {
		if off, why := firstBadRecord(good, key); off != -1 {
			t.Fatalf("good records refused at %d: %s", off, why)
		}
		b := append(append([]byte(nil), good...), tail...)
		off, why := firstBadRecord(b, key)
		if off != -1 && (off < len(good) || off >= len(b) || why == "") {
			t.Fatalf("bad record at %d (%q) in %d bytes of which %d good", off, why, len(b), len(good))
		}
	})
}

// TestCompressedStreamNotMistakenForDamage writes a stream (not the fleet's) whose sealed
// blocks are compressed: they are not in the record format, and the start goes on.
func TestCompressedStreamNotMistakenForDamage(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(&testenv.Buffer{}, nil))
	f, err := StartEmbedded(context.Background(), Options{StateDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(f.nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "PACKED", Subjects: []string{"packed.>"},
		Storage: jetstream.FileStorage, Compression: jetstream.S2Compression, MaxBytes: 8 << 20}); err != nil {
		f.Close()
		t.Fatal(err)
	}
	msg := []byte(strings.Repeat("compressible ", 1000))
	for range 500 {
		if _, err := js.Publish(context.Background(), "packed.x", msg); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	f.Close()
	blocks, _ := filepath.Glob(filepath.Join(dir, "nats", "jetstream", "$G", "streams", "PACKED", "msgs", "*.blk"))
	packed := 0
	for _, blk := range blocks {
		b, _ := os.ReadFile(blk)
		if off, _ := firstBadRecord(b, "PACKED-"+strings.TrimSuffix(filepath.Base(blk), ".blk")); off >= 0 {
			packed++
		}
	}
	if packed == 0 {
		t.Skipf("NATS compressed none of the %d blocks", len(blocks))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err = StartEmbedded(ctx, Options{StateDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatalf("start with %d compressed blocks: %v", packed, err)
	}
	f.Close()
}
