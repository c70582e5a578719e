package healthcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServedConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("repository: {url: /x}\nswitches: [{name: a, compiler: ocaml-system.4.13.1}]\n"), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("repository: {url: /x}\nswitches: [{name: a}]\n"), 0o644)
	state := filepath.Join(dir, "state")
	os.MkdirAll(filepath.Dir(savedConfig(state)), 0o755)
	os.WriteFile(savedConfig(state), []byte("repository: {url: /x}\nswitches: [{name: saved, compiler: ocaml-system.4.13.1}]\n"), 0o644)
	for _, c := range []struct {
		name, file, state string
		want              string // a switch's name, or part of the error
	}{
		{"no file", "", "", "give --health-check-config FILE"},
		{"broken file", broken, "", `configuration ` + broken + `: switches[0]: switch a: compiler ""`},
		{"missing file", filepath.Join(dir, "nope.yaml"), "", "nope.yaml: no such file"},
		{"the file", good, "", "a"},
		{"the saved changes first", good, state, "saved"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &served{config: c.file}
			pools := s.Pools() // the host asks before it starts the service
			cfg, err := s.load(c.state)
			switch {
			case err != nil && !strings.Contains(err.Error(), c.want):
				t.Errorf("error %q, want %q", err, c.want)
			case err == nil && cfg.Switches[0].Name != c.want:
				t.Errorf("switch %q, want %q", cfg.Switches[0].Name, c.want)
			}
			if err == nil && (len(pools) != 1 || pools[0] != "linux-x86_64") {
				t.Errorf("pools %v", pools)
			}
		})
	}
}
