package registrytest

import (
	"net/http"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func TestRegistry(t *testing.T) {
	r := Shared(t)
	for _, tc := range []struct {
		name       string
		user, pass string
		want       int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", r.Username, "wrong", http.StatusUnauthorized},
		{"right credentials", r.Username, r.Password, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+r.Addr+"/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET /v2/ answered %s, want %d", resp.Status, tc.want)
			}
		})
	}
	if Shared(t) != r {
		t.Error("Shared started a second registry")
	}
}
