package builder_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
)

// TestSecretsNeverInLogs builds a step that prints its secret with one value, then
// with another: the second build replays the first's log, and neither log may hold
// either value.
func TestSecretsNeverInLogs(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s := parse(t, `((from `+base+`)
 (run (secrets (token (target /run/secrets/token))) (shell "echo token=$(cat /run/secrets/token); cat /run/secrets/token")))`)
	a, bv := "first-secret-AAAA", "second-secret-BBBB"
	_, log1 := mustBuild(t, b, s, builder.BuildContext{Secrets: map[string][]byte{"token": []byte(a + "\n")}})
	_, log2 := mustBuild(t, b, s, builder.BuildContext{Secrets: map[string][]byte{"token": []byte(bv + "\n")}})
	for i, log := range []string{log1, log2} {
		if strings.Contains(log, a) || strings.Contains(log, bv) {
			t.Errorf("log %d shows a secret value:\n%s", i+1, log)
		}
		if !strings.Contains(log, "token="+builder.RedactMask) {
			t.Errorf("log %d lacks the redacted line:\n%s", i+1, log)
		}
	}
	if !strings.Contains(log2, "from cache") {
		t.Errorf("second build did not hit the cache:\n%s", log2)
	}
}

// TestSpecFaults: failures caused by the spec are the build's fault, so the fleet does
// not retry them elsewhere.
func TestSpecFaults(t *testing.T) {
	b, base := newBuilder(t, builder.Options{StepTimeout: 2 * time.Second})
	cases := []struct {
		name, ops string
		is        error
	}{
		{"step timeout", `(run (shell "sleep 60"))`, builder.ErrTimeout},
		{"workdir under a file", `(workdir /etc/passwd/sub) (run (shell "true"))`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, log, err := build(t, b, parse(t, `((from `+base+`) `+c.ops+`)`), builder.BuildContext{})
			if err == nil {
				t.Fatalf("build succeeded:\n%s", log)
			}
			if builder.IsInfrastructure(err) {
				t.Errorf("%v: counted as an infrastructure fault", err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v: not %v", err, c.is)
			}
		})
	}
}

// TestLogSaysCachedOrRan: each step's log ends saying whether it ran or came from the
// cache, and the log starts with a Dockerfile the classic builder accepts.
func TestLogSaysCachedOrRan(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	ctx := t.TempDir()
	os.WriteFile(filepath.Join(ctx, "f"), []byte("f\n"), 0o644)
	s := parse(t, `((from `+base+`) (run (shell "echo one")) (copy (src f) (dst /var/run/f)) (run (shell "cat /run/f")))`)
	_, log1 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	_, log2 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if n := strings.Count(log1, "---> saved as "); n != 3 {
		t.Errorf("first build: %d steps say they ran, want 3:\n%s", n, log1)
	}
	if n := strings.Count(log2, "---> using "); n != 3 || strings.Contains(log2, "saved as") {
		t.Errorf("second build: %d steps say they were cached, want 3:\n%s", n, log2)
	}
	if strings.Contains(log1, "--network=none") || !strings.Contains(log1, "kiln base export") {
		t.Errorf("log does not start with the classic form and the export hint:\n%s", log1)
	}
}
