package deployer

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/services/host"
)

func TestServe(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "deployer.yaml")
	// A repository on disk that does not exist: polling it fails at once, without the network.
	os.WriteFile(file, []byte(strings.Replace(validConfig(t, dir), "https://example.org/web.git", filepath.Join(dir, "none"), 1)), 0o600)
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no configuration", wantErr: "--deployer-config: missing"},
		{name: "configuration missing", args: []string{"--deployer-config", filepath.Join(dir, "absent.yaml")}, wantErr: "absent.yaml: no such file"},
		{name: "configured", args: []string{"--deployer-config", file}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			svc := ServiceKind.Flags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			env := &host.Env{StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Register: prometheus.NewRegistry()}
			r, err := svc.Start(t.Context(), env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for _, p := range []string{"POST /deployer/{service}/rollback", "POST /deployer/{service}/promote"} {
				if r.AdminRoutes[p] == nil || r.Routes[p] != nil {
					t.Errorf("%s is not an admin route", p)
				}
			}
			mux := http.NewServeMux()
			for p, h := range r.Routes {
				mux.Handle(p, h)
			}
			commit := strings.Repeat("ab", 20)
			os.MkdirAll(filepath.Join(env.StateDir, "deployer", "logs"), 0o755)
			os.WriteFile(filepath.Join(env.StateDir, "deployer", "logs", "web-"+commit+".log"), []byte("Step 1/4 : FROM scratch\n"), 0o644)
			for _, page := range []struct{ path, want string }{
				{"/deployer", `id="service-web"`},
				{"/deployer/status.json", `"name": "web"`},
				{"/deployer/web/build/" + commit, "Step 1/4"},
				{"/deployer/web/build/" + strings.Repeat("cd", 20), "404"},
				{"/deployer/web/build/..%2f..%2fstate.json", "404"},
			} {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, httptest.NewRequest("GET", page.path, nil))
				if got := fmt.Sprint(rec.Code, " ", rec.Body.String()); !strings.Contains(got, page.want) {
					t.Errorf("GET %s: %s, want %q", page.path, got, page.want)
				}
			}
		})
	}
}

// TestServePools: kiln serve's fleet serves the pools of the architectures the specs
// are built for, and none for Dockerfiles.
func TestServePools(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, edit string
		want       []string
	}{
		{name: "a Dockerfile", edit: "image: ocaml/web"},
		{name: "a spec for two architectures", edit: "image: ocaml/web\n    spec: deploy.spec\n    archs: [arm64, amd64]", want: []string{"linux-arm64", "linux-x86_64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			os.WriteFile(file, []byte(strings.Replace(validConfig(t, dir), "image: ocaml/web", tc.edit, 1)), 0o600)
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			svc := ServiceKind.Flags(fs)
			if err := fs.Parse([]string{"--deployer-config", file}); err != nil {
				t.Fatal(err)
			}
			pu, ok := svc.(host.PoolUser)
			if !ok {
				t.Fatal("the deployer does not say which fleet pools it builds on")
			}
			if got := pu.Pools(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("pools %v, want %v", got, tc.want)
			}
		})
	}
}
