package docker_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/spec"
)

// TestExportedBaseAndClassicDockerfile loads the Debian base with `kiln base export |
// docker load` and builds, with the classic builder, the Dockerfile a build log
// offers for a spec full of characters Docker would reinterpret: the steps must see
// exactly what the spec says.
func TestExportedBaseAndClassicDockerfile(t *testing.T) {
	r := newRunner(t)
	ctx := context.Background()
	var archive bytes.Buffer
	if err := imagetest.Store(t).ExportDocker(ctx, "kiln/debian:bookworm", &archive); err != nil {
		t.Fatal(err)
	}
	loaded, err := r.Engine.Load(ctx, &archive)
	if err != nil || !strings.Contains(loaded, "kiln/debian:bookworm") {
		t.Fatalf("docker load: %q, %v", loaded, err)
	}
	ctxDir := t.TempDir()
	os.WriteFile(filepath.Join(ctxDir, "$X.txt"), []byte("dollar file\n"), 0o644)
	os.WriteFile(filepath.Join(ctxDir, `back\slash`), []byte("backslash file\n"), 0o644)
	s, err := spec.ParseString(`((from kiln/debian:bookworm)
 (env HOME /root)
 (env LIT "cost: $HOME \"q\" \\")
 (env NOTE "two
lines")
 (env SEP "a\ b")
 (workdir "/w/$HOME")
 (copy (src "$X.txt" "back\\slash") (dst "$HOME/x/"))
 (run (shell "printf 'lit=[%s] note=[%s] sep=[%s] pwd=[%s]\n' \"$LIT\" \"$NOTE\" \"$SEP\" \"$PWD\"; cat '$HOME/x/$X.txt' '$HOME/x/back\\slash'")))`)
	if err != nil {
		t.Fatal(err)
	}
	df := s.Dockerfile(spec.DockerfileOptions{})
	var out bytes.Buffer
	if err := r.Engine.BuildDockerfile(ctx, df, ctxDir, "kiln-test-escapes:latest", &out, "--build-arg", "KILN_ENV_1=two\nlines"); err != nil {
		t.Fatalf("%v\n%s\n%s", err, df, out.String())
	}
	for _, want := range []string{
		"lit=[cost: $HOME \"q\" \\] note=[two\nlines] sep=[a\\ b] pwd=[/w/$HOME]",
		"dollar file\nbackslash file\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("docker build output lacks %q:\n%s\n%s", want, df, out.String())
		}
	}
}

// TestSecretsNeverInLogsDocker: a step printing its secret, built with one value and
// then another (a cache hit), never shows either; the value is mounted from a tmpfs.
func TestSecretsNeverInLogsDocker(t *testing.T) {
	r := newRunner(t)
	s, err := spec.ParseString(`((from kiln/debian:bookworm)
 (run (secrets (token (target /run/secrets/token)))
      (shell "echo token=$(cat /run/secrets/token); awk '$5 == \"/run/secrets/token\" { for (i = 7; i <= NF; i++) if ($i == \"-\") print \"fstype=\" $(i+1) }' /proc/self/mountinfo")))`)
	if err != nil {
		t.Fatal(err)
	}
	a, b := "docker-secret-AAAA", "docker-secret-BBBB"
	var logs []string
	for _, v := range []string{a, b} {
		var log bytes.Buffer
		if _, err := r.Build(context.Background(), s, docker.Options{Secrets: map[string][]byte{"token": []byte(v + "\n")}, Log: &log}); err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		logs = append(logs, log.String())
	}
	for i, log := range logs {
		if strings.Contains(log, a) || strings.Contains(log, b) {
			t.Errorf("log %d shows a secret value:\n%s", i+1, log)
		}
		if !strings.Contains(log, "token="+builder.RedactMask) || !strings.Contains(log, "fstype=tmpfs") {
			t.Errorf("log %d lacks the redacted value or the tmpfs mount:\n%s", i+1, log)
		}
	}
	if !strings.Contains(logs[1], "from cache") {
		t.Errorf("second build did not hit the cache:\n%s", logs[1])
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "kiln-secrets-*")); len(left) > 0 {
		t.Errorf("secrets on disk: %v", left)
	}
}
