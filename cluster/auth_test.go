package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestEmbeddedNATSAuthenticates connects to an embedded fleet with each kind of
// credential: none or a wrong token is refused, the worker and client tokens admit.
func TestEmbeddedNATSAuthenticates(t *testing.T) {
	tf := newTestFleet(t, Options{})
	tests := []struct {
		name  string
		url   string
		token string
		admit bool
	}{
		{"no token", tf.f.Address, "", false},
		{"wrong token", tf.f.Address, "guess", false},
		{"worker token", tf.f.Address, tf.f.WorkerToken, true},
		{"worker URL", tf.f.URL, "", true},
		{"client token", tf.f.Address, tf.f.ClientToken, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tf.ctx, 10*time.Second)
			defer cancel()
			nc, err := Connect(ctx, ConnOptions{URL: tc.url, Token: tc.token})
			if !tc.admit {
				if err == nil {
					nc.Close()
					t.Fatal("admitted")
				}
				if !errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), tf.f.WorkerToken) {
					t.Fatalf("refusal: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			nc.Close()
		})
	}
	// the tokens are kept: a restarted fleet admits the same workers
	worker, client := tf.f.WorkerToken, tf.f.ClientToken
	tf.restart()
	if tf.f.WorkerToken != worker || tf.f.ClientToken != client {
		t.Fatal("the NATS tokens changed across a restart")
	}
	if fi, err := os.Stat(TokenPath(tf.dir, "worker")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("worker token file: %v %v", fi, err)
	}
}

// TestWorkerTakesOnlySchedulerMessages publishes a job and a cancel to a worker's
// subjects with the worker and client tokens: the server refuses them and the worker
// runs only what the scheduler sends.
func TestWorkerTakesOnlySchedulerMessages(t *testing.T) {
	tf := newTestFleet(t, Options{})
	startInProcessWorker(t, tf, "victim")
	marker := filepath.Join(t.TempDir(), "forged-job-ran")
	forged, _ := json.Marshal(Job{Request: Request{ID: "forged", Pool: "linux-x86_64", Client: "x", Spec: "touch " + marker}, State: StateRunning, Attempt: 1})
	long := tf.submit(Request{Spec: "sleep 30"})
	tf.waitFor("long job running", 20*time.Second, func() bool { return tf.job(long.ID).State == StateRunning })
	cancelMsg, _ := json.Marshal(cancelMsg{JobRef{ID: long.ID, Attempt: 1}})
	tests := []struct {
		name, token, subject string
		data                 []byte
	}{
		{"job with the worker token", tf.f.WorkerToken, subjToWorker + "victim.job", forged},
		{"cancel with the worker token", tf.f.WorkerToken, subjToWorker + "victim.cancel", cancelMsg},
		{"job with the client token", tf.f.ClientToken, subjToWorker + "victim.job", forged},
		{"submit with the worker token", tf.f.WorkerToken, subjAPI + "submit", []byte(`{"pool":"linux-x86_64","client":"x","spec":"true"}`)},
		{"job record with the worker token", tf.f.WorkerToken, "$KV." + bucketJobs + "." + long.ID, []byte(`{}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tf.ctx, 10*time.Second)
			defer cancel()
			refused := make(chan error, 1)
			nc, err := nats.Connect(tf.f.Address, nats.Token(tc.token), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case refused <- err:
				default:
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := nc.Publish(tc.subject, tc.data); err != nil {
				t.Fatal(err)
			}
			_ = nc.FlushWithContext(ctx)
			select {
			case err := <-refused:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Fatalf("error %v, want a permissions violation", err)
				}
			case <-ctx.Done():
				t.Fatalf("publish to %s was not refused", tc.subject)
			}
		})
	}
	// what the scheduler sends still arrives; the forgeries did not
	if r := tf.wait(tf.submit(Request{Spec: "true"}).ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("job from the scheduler: %+v", r)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the worker ran a job published by another client")
	}
	if j := tf.job(long.ID); j.State != StateRunning {
		t.Fatalf("job cancelled by a forged message: %+v", j)
	}
}

// TestWorkersViewHidesSession reads the workers through the HTTP handler: a worker is
// named by its name and a public instance id, never by its session, which is random.
func TestWorkersViewHidesSession(t *testing.T) {
	tf := newTestFleet(t, Options{})
	w := startInProcessWorker(t, tf, "w1")
	w.mu.Lock()
	session := w.session
	w.mu.Unlock()
	if len(session) < 26 || strings.Contains(session, "w1") {
		t.Fatalf("session %q: not a random secret", session)
	}
	srv := httptest.NewServer(Handler(tf.f.Client))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/workers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ws []map[string]any
	if err := json.Unmarshal(body, &ws); err != nil || len(ws) != 1 {
		t.Fatalf("workers %s: %v", body, err)
	}
	tests := []struct {
		name string
		bad  bool
	}{
		{"session value shown", strings.Contains(string(body), session)},
		{"session field present", ws[0]["session"] != nil},
		{"no instance id", ws[0]["instance"] == "" || ws[0]["instance"] == nil},
		{"no name", ws[0]["name"] != "w1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bad {
				t.Errorf("workers view: %s", body)
			}
		})
	}
}
