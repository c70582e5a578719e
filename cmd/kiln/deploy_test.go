package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/services/deployer"
)

func TestDeployCommand(t *testing.T) {
	const token = "s3cret"
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /deployer/status.json", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(deployer.Status{Services: []deployer.ServiceStatus{{Name: "web", Stages: []deployer.StageStatus{
			{Name: "production", Live: &deployer.Live{Commit: "0123456789abcdef", Digest: "sha256:aa", Since: time.Unix(0, 0).UTC(), Healthy: true}},
			{Name: "staging"}},
			LastFailure: &deployer.Record{Stage: "staging", Commit: "fedcba9876543210", Outcome: deployer.OutcomeRolledBack,
				Finished: time.Unix(60, 0).UTC(), Message: "health check failed: 503", Job: "42"}}}})
	})
	mux.HandleFunc("GET /api/csrf", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"csrf":"c"}`)) })
	mux.HandleFunc("POST /deployer/{service}/{action}", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.PathValue("action")+" "+r.PathValue("service")+" "+r.FormValue("stage")+" "+r.FormValue("digest"))
		if r.Header.Get(deployer.TokenHeader) != token {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"rollback: admin token missing or wrong"}`))
			return
		}
		w.Write([]byte(`{"result":"` + r.PathValue("action") + ` done"}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte(token+"\n"), 0o600)
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	for _, tc := range []struct {
		name    string
		args    []string
		want    []string
		wantErr string
		posted  string
	}{
		{name: "status", args: []string{"status"}, want: []string{"SERVICE", "web      production  0123456789ab  sha256:aa  1970-01-01 00:00  healthy", "web      staging     -",
			"web: last failure: staging fedcba987654 rolled-back at 1970-01-01 00:01: health check failed: 503 (its log: kiln ctl log 42)"}},
		{name: "rollback", args: []string{"rollback", "web", "sha256:aa", "--admin-token-file", good}, want: []string{"rollback done"},
			posted: "rollback web production sha256:aa"},
		{name: "rollback of staging", args: []string{"rollback", "web", "sha256:aa", "--stage", "staging", "--admin-token-file", good},
			posted: "rollback web staging sha256:aa"},
		{name: "wrong token", args: []string{"rollback", "web", "sha256:aa", "--admin-token-file", bad}, wantErr: "403 Forbidden: rollback: admin token missing or wrong",
			posted: "rollback web production sha256:aa"},
		{name: "no token file", args: []string{"promote", "web"}, wantErr: "403 Forbidden", posted: "promote web  "},
		{name: "promote", args: []string{"promote", "web", "--admin-token-file", good}, want: []string{"promote done"}, posted: "promote web  "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			var out bytes.Buffer
			cmd := deployCommand()
			cmd.SetArgs(append(tc.args, "--server", srv.URL, "--token", ""))
			cmd.SetOut(&out)
			cmd.SetContext(context.Background())
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			err := cmd.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Join(got, "\n") != tc.posted {
				t.Errorf("posted %q, want %q", got, tc.posted)
			}
		})
	}
}
