package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats-server/v2/server"
)

// The JetStream file store's layout and record format (nats-server's filestore.go),
// as far as checking it needs.
const (
	storeMetaFile  = "meta.inf"
	storeMetaSum   = "meta.sum"
	storeIndexFile = "index.db" // the streams' state snapshot; rebuilt from the blocks when missing
	recordHeader   = 22         // length 4 (top bit: has headers), sequence 8, time 8, subject length 2
	recordHash     = 8
	recordHdrBit   = 1 << 31
	recordMaxLen   = 32 << 20
)

// fleetStreams are the streams the scheduler makes; they are re-created with its
// settings, so their metadata can be repaired.
var fleetStreams = map[string]bool{
	"KV_" + bucketJobs: true, "KV_" + bucketState: true, streamLogs: true, "OBJ_" + bucketSources: true,
}

// checkStore verifies the JetStream store in dir before the NATS server reads it: each
// stream's metadata against its checksum, and each record of its message blocks. The
// fleet's own streams are repaired and the repair logged: damaged metadata is moved
// aside (the scheduler re-creates the stream on its blocks), a damaged block is cut
// before its first bad record (the original kept beside it as .damaged). Damage in other
// streams is an error naming the file and what to do.
func checkStore(dir string, log *slog.Logger) error {
	start := time.Now()
	streams, _ := filepath.Glob(filepath.Join(dir, server.JetStreamStoreDir, "*", "streams", "*"))
	var checked int64
	for _, sd := range streams {
		if fi, err := os.Stat(sd); err != nil || !fi.IsDir() {
			continue
		}
		name := filepath.Base(sd)
		compressed, problem := checkStreamMeta(sd, name)
		if problem != "" {
			meta := filepath.Join(sd, storeMetaFile)
			if !fleetStreams[name] {
				return fmt.Errorf("JetStream store: stream %s: %s is %s; restore the folder %s from a backup, or remove it (its messages are lost)",
					name, meta, problem, sd)
			}
			if err := moveAside(meta); err != nil {
				return fmt.Errorf("JetStream store: stream %s: %s is %s and cannot be moved aside: %w", name, meta, problem, err)
			}
			_ = os.Remove(filepath.Join(sd, storeMetaSum))
			log.Warn("JetStream store repaired: stream metadata damaged; moved aside, the stream is re-created with the fleet's settings on its message blocks",
				"stream", name, "path", meta, "problem", problem, "kept", meta+".damaged")
		}
		if compressed {
			continue // its sealed blocks are compressed, not in the record format
		}
		blocks, _ := filepath.Glob(filepath.Join(sd, "msgs", "*.blk"))
		for _, blk := range blocks {
			n, err := checkBlock(blk, name, fleetStreams[name], log)
			if err != nil {
				return err
			}
			checked += n
		}
	}
	if len(streams) > 0 {
		log.Debug("JetStream store checked", "dir", dir, "streams", len(streams), "bytes", checked, "took", time.Since(start))
	}
	return nil
}

// checkStreamMeta returns what is wrong with a stream's metadata, or "", and whether the
// stream compresses its blocks.
func checkStreamMeta(sd, name string) (compressed bool, problem string) {
	buf, err := os.ReadFile(filepath.Join(sd, storeMetaFile))
	if err != nil {
		return false, "unreadable (" + err.Error() + ")"
	}
	sum, err := os.ReadFile(filepath.Join(sd, storeMetaSum))
	if err != nil {
		return false, "without its checksum (" + err.Error() + ")"
	}
	key := sha256.Sum256([]byte(name))
	hh, _ := highwayhash.New64(key[:])
	hh.Write(buf)
	if hex.EncodeToString(hh.Sum(nil)) != string(sum) {
		return false, "damaged (its checksum in " + storeMetaSum + " does not match)"
	}
	var cfg struct {
		Name        string `json:"name"`
		Compression string `json:"compression"`
	}
	if err := json.Unmarshal(buf, &cfg); err != nil {
		return false, "damaged (" + err.Error() + ")"
	}
	if cfg.Name != name {
		return false, fmt.Sprintf("for stream %q, not %q", cfg.Name, name)
	}
	return cfg.Compression != "" && cfg.Compression != "none", ""
}

// checkBlock verifies the records of one message block and returns its size. A damaged
// block of a fleet stream is cut before its first bad record; of another stream, it is
// an error.
func checkBlock(path, stream string, repair bool, log *slog.Logger) (int64, error) {
	index, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".blk"), 10, 32)
	if err != nil {
		return 0, nil // not a block of the store's naming
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("JetStream store: stream %s: read %s: %w", stream, path, err)
	}
	off, why := firstBadRecord(b, fmt.Sprintf("%s-%d", stream, index))
	if off < 0 {
		return int64(len(b)), nil
	}
	if !repair {
		return 0, fmt.Errorf("JetStream store: stream %s: block %s has a bad record at offset %d (%s); restore the stream's folder from a backup, or truncate the file to %d bytes and remove %s (the records after it are lost)",
			stream, path, off, why, off, filepath.Join(filepath.Dir(path), storeIndexFile))
	}
	if err := moveAside(path); err != nil {
		return 0, fmt.Errorf("JetStream store: stream %s: block %s is damaged at offset %d (%s) and cannot be moved aside: %w", stream, path, off, why, err)
	}
	if err := os.WriteFile(path, b[:off], 0o640); err != nil {
		return 0, fmt.Errorf("JetStream store: stream %s: rewrite the good records of %s: %w", stream, path, err)
	}
	// the state snapshot still counts the lost records: the server rebuilds it from the blocks
	if err := os.Remove(filepath.Join(filepath.Dir(path), storeIndexFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("JetStream store: stream %s: %w", stream, err)
	}
	log.Warn("JetStream store repaired: message block damaged; its records from the first bad one on are dropped",
		"stream", stream, "path", path, "offset", off, "problem", why, "dropped_bytes", len(b)-off, "kept", path+".damaged")
	return int64(off), nil
}

// firstBadRecord returns the offset of the first record of a block that is cut short,
// has an impossible length or fails its checksum (and why), or -1.
func firstBadRecord(b []byte, hashKey string) (int, string) {
	key := sha256.Sum256([]byte(hashKey))
	hh, _ := highwayhash.New64(key[:])
	le := binary.LittleEndian
	for off := 0; off < len(b); {
		if off+recordHeader > len(b) {
			return off, "record cut short"
		}
		hdr := b[off : off+recordHeader]
		rl, slen := le.Uint32(hdr[0:]), int(le.Uint16(hdr[20:]))
		hasHeaders := rl&recordHdrBit != 0
		rl &^= recordHdrBit
		dlen, shlen := int(rl)-recordHeader, slen
		if hasHeaders {
			shlen += 4
		}
		if dlen < 0 || shlen > dlen-recordHash || rl > recordMaxLen || off+int(rl) > len(b) {
			return off, fmt.Sprintf("impossible record length %d", rl)
		}
		data := b[off+recordHeader : off+int(rl)]
		hh.Reset()
		hh.Write(hdr[4:20])
		hh.Write(data[:slen])
		if hasHeaders {
			hh.Write(data[slen+4 : dlen-recordHash])
		} else {
			hh.Write(data[slen : dlen-recordHash])
		}
		if !bytes.Equal(hh.Sum(nil), data[dlen-recordHash:]) {
			return off, "checksum mismatch"
		}
		off += int(rl)
	}
	return -1, ""
}

// moveAside renames path to path.damaged, replacing an older copy; a missing file is
// left missing.
func moveAside(path string) error {
	if err := os.Rename(path, path+".damaged"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
