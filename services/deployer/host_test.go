package deployer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestHostErrors(t *testing.T) {
	s := startSSH(t)
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
	pub, _ := os.ReadFile(other + ".pub")
	good, _ := os.ReadFile(s.KnownHosts)
	changed := filepath.Join(dir, "changed")
	// The server's name with another key: what a replaced (or impersonated) host looks like.
	os.WriteFile(changed, []byte(strings.Fields(string(good))[0]+" "+strings.Join(strings.Fields(string(pub))[:2], " ")+"\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	closed := "root@" + testenv.FreeAddr(t)
	for _, tc := range []struct {
		name       string
		ssh        string
		knownHosts string
		key        string
		want       error
		wantMsg    string
	}{
		{name: "reachable", ssh: "root@" + s.Addr, knownHosts: s.KnownHosts, key: s.KeyFile},
		{name: "host key changed", ssh: "root@" + s.Addr, knownHosts: changed, key: s.KeyFile, want: ErrHostKeyChanged,
			wantMsg: "answers with another key than the one in " + changed},
		{name: "host not in known_hosts", ssh: "root@" + s.Addr, knownHosts: empty, key: s.KeyFile, want: ErrHostKeyUnknown,
			wantMsg: "keys are never trusted on first use"},
		{name: "key refused", ssh: "root@" + s.Addr, knownHosts: s.KnownHosts, key: other, want: ErrSSHAuth},
		{name: "unreachable", ssh: closed, knownHosts: s.KnownHosts, key: s.KeyFile, want: ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{name: "h", h: Host{SSH: tc.ssh, KeyFile: tc.key, KnownHostsFile: tc.knownHosts}}
			out, err := r.run(t.Context(), nil, "echo", "it's here")
			if tc.want == nil {
				if err != nil || out != "it's here" {
					t.Fatalf("got %q, %v", out, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			if b, _ := os.ReadFile(empty); len(b) != 0 {
				t.Errorf("the unknown host's key was added to known_hosts: %q", b)
			}
		})
	}
}

func TestFileRoundTrip(t *testing.T) {
	r := &runner{name: "here"}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
	}{
		{name: "trailing newline", content: "upstream web {\n    server 127.0.0.1:1;\n}\n"},
		{name: "no trailing newline", content: "upstream web { server 127.0.0.1:1; }"},
		{name: "blank lines around", content: "\n\nx\n\n"},
		{name: "quotes and dollars", content: "it's $HOME `here`\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := r.writeFile(t.Context(), p, []byte(tc.content)); err != nil {
				t.Fatal(err)
			}
			got, err := r.readFile(t.Context(), p)
			if err != nil || got != tc.content {
				t.Errorf("read back %q (%v), wrote %q", got, err, tc.content)
			}
		})
	}
	if got, err := r.readFile(t.Context(), filepath.Join(dir, "absent")); err != nil || got != "" {
		t.Errorf("a missing file reads %q, %v", got, err)
	}
}
