package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// newID makes a ticket: sortable by time, unique.
func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}
