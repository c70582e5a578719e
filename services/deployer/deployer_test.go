package deployer

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestReload(t *testing.T) {
	dir := t.TempDir()
	good := validConfig(t, dir)
	file := filepath.Join(dir, "deployer.yaml")
	os.WriteFile(file, []byte(good), 0o600)
	reg := prometheus.NewRegistry()
	d, err := New(Options{ConfigFile: file, StateDir: filepath.Join(dir, "state"), Register: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		name      string
		content   string
		changed   bool
		wantErr   string
		wantPromo string // the promote setting in force afterwards
	}{
		{name: "unchanged", content: good, wantPromo: "confirm"},
		{name: "changed", content: strings.Replace(good, "promote: confirm", "promote: auto", 1), changed: true, wantPromo: "auto"},
		{name: "unknown key keeps the previous configuration", content: strings.Replace(good, "poll: 10s", "pol: 10s", 1),
			wantErr: "field pol not found", wantPromo: "auto"},
		{name: "missing secret file keeps the previous configuration", content: strings.Replace(good, dir+"/admin", dir+"/gone", 1),
			wantErr: "admin_token_file: open " + dir + "/gone", wantPromo: "auto"},
		{name: "fixed", content: good, changed: true, wantPromo: "confirm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(file, []byte(tc.content), 0o600)
			changed, err := d.Reload()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if changed != tc.changed {
				t.Errorf("changed %v, want %v", changed, tc.changed)
			}
			if got := d.config().Services[0].Promote; got != tc.wantPromo {
				t.Errorf("promote %q in force, want %q", got, tc.wantPromo)
			}
			if st := d.Status(); (st.ConfigError != "") != (tc.wantErr != "") {
				t.Errorf("status page config error %q", st.ConfigError)
			}
		})
	}
	m := testenv.Metrics(t, reg)
	if m["kiln_deployer_config_reloads_total{result=invalid}"] != 2 || m["kiln_deployer_config_reloads_total{result=ok}"] != 3 {
		t.Errorf("reloads counted: %v", m)
	}
}
