package github

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkVerifyAndParsePullRequest: the work done per pull_request delivery.
func BenchmarkVerifyAndParsePullRequest(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "pull_request.json"))
	if err != nil {
		b.Fatal(err)
	}
	sig := Sign(secret, body)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := VerifySignature(secret, body, sig); err != nil {
			b.Fatal(err)
		}
		if _, err := ParseEvent("pull_request", "d", body); err != nil {
			b.Fatal(err)
		}
	}
}
