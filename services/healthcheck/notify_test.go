package healthcheck

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

func TestWebhooks(t *testing.T) {
	got := make(chan notify.Message, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m notify.Message
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("not a message: %s", body)
		}
		got <- m
	}))
	defer srv.Close()
	urlFile := filepath.Join(t.TempDir(), "url")
	os.WriteFile(urlFile, []byte(srv.URL+"\n"), 0o600)
	w, err := NewWebhooks([]Webhook{{Name: "hook", Kind: "json", URLFile: urlFile}}, &host.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, c := range []struct {
		name     string
		notice   Notice
		title    string
		severity notify.Severity
		text     []string
	}{
		{"first run", Notice{Run: &Run{ID: 1, Commit: "c1", Counts: Counts{Good: 3}}, URL: "http://ci/health-check/run/1"},
			"health check: run 1 done", notify.Success, nil},
		{"something broke", Notice{Run: &Run{ID: 2, Commit: "c2", Counts: Counts{Good: 2, Bad: 1}},
			Diff: &Diff{Old: 1, New: 2, Changes: []PackageChange{{Package: "foo.1", Switch: "5.2", Change: NowBroken, Old: Good, New: Bad}}}},
			"health check: run 2 done", notify.Warning, []string{"against run 1: 1 now broken, 0 now fixed", "now broken: foo.1 on 5.2 (bad)"}},
		{"a candidate", Notice{Run: &Run{ID: 3, Candidate: &CandidateInfo{Name: "my-branch", Baseline: 2}}},
			"health check: candidate my-branch (run 3) done", notify.Success, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !w.Send(c.notice) {
				t.Fatal("the message was not queued")
			}
			select {
			case m := <-got:
				if m.Title != c.title || m.Severity != c.severity || m.Link != c.notice.URL {
					t.Errorf("got %+v", m)
				}
				for _, s := range c.text {
					if !strings.Contains(m.Text, s) {
						t.Errorf("text %q does not say %q", m.Text, s)
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing delivered")
			}
		})
	}
}
