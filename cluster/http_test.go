package cluster

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerServesQueueAndJobs(t *testing.T) {
	tf := newTestFleet(t, Options{})
	j := tf.submit(Request{Spec: "echo hi", CacheHint: "h1"})
	srv := httptest.NewServer(Handler(tf.f.Client))
	defer srv.Close()
	get := func(path string, want int) []byte {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	var q QueueInfo
	if err := json.Unmarshal(get("/queue/linux-x86_64", 200), &q); err != nil {
		t.Fatal(err)
	}
	if len(q.Queued) != 1 || q.Queued[0].ID != j.ID || !strings.Contains(q.Queued[0].Why, "no worker") {
		t.Fatalf("queue %+v", q)
	}
	get("/queue/nope", 404)
	var pools []PoolInfo
	json.Unmarshal(get("/pools", 200), &pools)
	if len(pools) != 2 {
		t.Fatalf("pools %+v", pools)
	}
	var job Job
	json.Unmarshal(get("/jobs/"+j.ID, 200), &job)
	if job.State != StateQueued || job.CacheHint != "h1" {
		t.Fatalf("job %+v", job)
	}
	get("/jobs/no-such-job", 404)
	get("/jobs/"+j.ID+"/log?offset=0", 200)
}
