package giteatest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestStartAnswersWithItsVersionAndToken(t *testing.T) {
	s := Start(t)
	req, _ := http.NewRequest(http.MethodGet, s.URL+"api/v1/user", nil)
	req.Header.Set("Authorization", "token "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var u struct {
		Login   string `json:"login"`
		IsAdmin bool   `json:"is_admin"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || u.Login != s.Admin || !u.IsAdmin {
		t.Fatalf("GET /api/v1/user with the token: %s %+v %v", resp.Status, u, err)
	}
	url := s.CreateRepo(t, "empty", true)
	if url != s.URL+s.Admin+"/empty.git" || !strings.Contains(s.PushURL(s.Admin, "empty"), s.Token+"@") {
		t.Errorf("CreateRepo = %s", url)
	}
	resp2, err := http.Get(s.URL + "api/v1/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var v struct{ Version string }
	_ = json.NewDecoder(resp2.Body).Decode(&v)
	if !strings.HasPrefix("v"+v.Version, Version) {
		t.Errorf("server version %q, want %s", v.Version, Version)
	}
}
