package web

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current"
)

// adminToken logs in as the admin through the API and returns the bearer header.
func (c *console) adminToken(t *testing.T) map[string]string {
	t.Helper()
	cl := c.client()
	code, body := postJSON(t, cl, "/api/login", `{"user":"admin","password":"`+testPassword+`"}`, map[string]string{"X-CSRF-Token": cl.csrf("/login")})
	var v struct{ Token string }
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("login: %d %s", code, body)
	}
	return map[string]string{"Authorization": "Bearer " + v.Token}
}

func TestOversizedJSONBodyIs413(t *testing.T) {
	c := newConsole(t)
	admin := c.adminToken(t)
	cases := []struct {
		name, body string
		code       int
	}{
		{"within the limit", `{"pattern":"x+","explanation":"` + strings.Repeat("y", 1000) + `"}`, http.StatusOK},
		{"over the limit", `{"pattern":"x+","explanation":"` + strings.Repeat("y", 2<<20) + `"}`, http.StatusRequestEntityTooLarge},
		{"malformed", `{"pattern":`, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := postJSON(t, c.client(), "/api/log-rules", tc.body, admin); code != tc.code {
				t.Errorf("answer %d, want %d: %.200s", code, tc.code, body)
			}
		})
	}
}

// damagedLog truncates the log of item's finished job and returns the job.
func (c *console) damagedLog(t *testing.T, item string) (string, current.JobDetail) {
	t.Helper()
	id := c.jobOf(item, current.JobOK)
	d, err := c.eng.Job(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(d.LogPath, 5); err != nil {
		t.Fatal(err)
	}
	return id, d
}

// Messages about the server's own trouble name files on it only to admins.
func TestServerPathsShownToAdminsOnly(t *testing.T) {
	c := newConsole(t, "alpha")
	id, d := c.damagedLog(t, "alpha")
	dir := filepath.Dir(d.LogPath)
	admin := c.adminToken(t)
	cases := []struct {
		name     string
		path     string
		hdr      map[string]string
		showPath bool
	}{
		{"raw log, anonymous", "/api/job/" + id + "/log", nil, false},
		{"job page, anonymous", "/job/" + id, nil, false},
		{"raw log, admin", "/api/job/" + id + "/log", admin, true},
		{"job page, admin", "/job/" + id, admin, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, body, _ := c.client().do("GET", tc.path, nil, tc.hdr)
			if !strings.Contains(body, "corrupt") || !strings.Contains(body, filepath.Base(d.LogPath)) {
				t.Fatalf("no word of the damaged log %s:\n%s", filepath.Base(d.LogPath), body)
			}
			if strings.Contains(body, dir) != tc.showPath {
				t.Errorf("shows the folder %s: %v, want %v:\n%s", dir, !tc.showPath, tc.showPath, body)
			}
		})
	}
}
