package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
)

// poolsEngine is an engine whose pools are given.
type poolsEngine struct {
	CurrentEngine
	pools []Pool
}

func (e poolsEngine) Pools(context.Context) ([]Pool, error) { return e.pools, nil }

func TestJobsPoolsAndServiceLinks(t *testing.T) {
	eng, err := current.Open(current.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	auth, _, err := OpenAuth(AuthOptions{Dir: filepath.Join(t.TempDir(), "console"), AdminPassword: testPassword, Anonymous: RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		pool    Pool
		want    []string
		notWant []string
	}{
		{"a pool of slots", Pool{Name: "default", Slots: 4, InUse: 1}, []string{"<td>default</td><td>1 / 4</td>"}, nil},
		{"the fleet's pool, whose jobs wait on the fleet", Pool{Name: "fleet", Slots: 1 << 20, InUse: 3},
			[]string{`<td>fleet</td><td>3 (no limit here: the <a href="/fleet">fleet</a> schedules them)</td>`}, []string{"1048576"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(Options{Engine: poolsEngine{CurrentEngine{eng}, []Pool{c.pool}}, Auth: auth, Register: prometheus.NewRegistry(),
				Links: []Link{{Text: "Git repositories", URL: "/git"}}})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s)
			defer srv.Close()
			for _, path := range []string{"/jobs", "/"} {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(body), `<a class="service" href="/git">Git repositories</a>`) {
					t.Errorf("%s has no link to the service's pages", path)
				}
				if path != "/jobs" {
					continue
				}
				for _, w := range c.want {
					if !strings.Contains(string(body), w) {
						t.Errorf("/jobs lacks %q:\n%s", w, body)
					}
				}
				for _, w := range c.notWant {
					if strings.Contains(string(body), w) {
						t.Errorf("/jobs shows %q", w)
					}
				}
			}
		})
	}
}
