package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// newID makes a ticket: sortable by time, unique.
func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// newSecret makes a random secret (128 bits or more, URL-safe): worker sessions, NATS tokens.
func newSecret() string {
	return rand.Text()
}

// publicID is a short name of a secret that may be shown without revealing it.
func publicID(secret string) string {
	h := sha256.Sum256([]byte("kiln public id\x00" + secret))
	return hex.EncodeToString(h[:6])
}
