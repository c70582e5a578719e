package github

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/forge"
)

// commentAPI serves a pull request's comments as GitHub's REST API does.
type commentAPI struct {
	mu       sync.Mutex
	comments []map[string]any
	calls    []string
}

func (a *commentAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, r.Method+" "+r.URL.Path)
	var body struct {
		Body string `json:"body"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	switch {
	case r.Method == "GET" && r.URL.Path == "/repos/o/r/issues/5/comments":
		json.NewEncoder(w).Encode(a.comments)
	case r.Method == "POST" && r.URL.Path == "/repos/o/r/issues/5/comments":
		c := map[string]any{"id": len(a.comments) + 100, "body": body.Body}
		a.comments = append(a.comments, c)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(c)
	case r.Method == "PATCH" && strings.HasPrefix(r.URL.Path, "/repos/o/r/issues/comments/"):
		id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/repos/o/r/issues/comments/"))
		for _, c := range a.comments {
			if c["id"] == id {
				c["body"] = body.Body
				json.NewEncoder(w).Encode(c)
				return
			}
		}
		http.NotFound(w, r)
	default:
		http.NotFound(w, r)
	}
}

func TestUpsertComment(t *testing.T) {
	marker := forge.CommentMarker("svc")
	for _, tc := range []struct {
		name     string
		existing []map[string]any
		body     string
		calls    string // the requests after the listing
		bodies   []string
	}{
		{"creates the comment", []map[string]any{{"id": 1, "body": "a reviewer's"}}, "2 failed",
			"POST /repos/o/r/issues/5/comments", []string{"a reviewer's", marker + "\n2 failed"}},
		{"edits the one holding the marker", []map[string]any{{"id": 1, "body": "hi"}, {"id": 2, "body": marker + "\nold"}}, "new",
			"PATCH /repos/o/r/issues/comments/2", []string{"hi", marker + "\nnew"}},
		{"sends nothing when unchanged", []map[string]any{{"id": 2, "body": marker + "\nsame"}}, "same",
			"", []string{marker + "\nsame"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &commentAPI{comments: tc.existing}
			srv := httptest.NewServer(api)
			defer srv.Close()
			c, err := NewTokenClient(srv.URL, "token", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.UpsertComment(context.Background(), Repo{Owner: "o", Name: "r"}, 5, marker, tc.body); err != nil {
				t.Fatal(err)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if got := strings.Join(api.calls[1:], ", "); got != tc.calls {
				t.Errorf("requests after the listing: %q, want %q", got, tc.calls)
			}
			var bodies []string
			for _, c := range api.comments {
				bodies = append(bodies, fmt.Sprint(c["body"]))
			}
			if fmt.Sprint(bodies) != fmt.Sprint(tc.bodies) {
				t.Errorf("comments %q, want %q", bodies, tc.bodies)
			}
		})
	}
	t.Run("refuses a branch", func(t *testing.T) {
		c, _ := NewTokenClient("http://127.0.0.1:1", "token", nil)
		if err := c.UpsertComment(context.Background(), Repo{Owner: "o", Name: "r"}, 0, marker, "x"); err == nil || !strings.Contains(err.Error(), "not a pull request number") {
			t.Errorf("comment on PR 0: %v", err)
		}
	})
}
