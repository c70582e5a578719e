package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFleetRefusesBadInputAndKeepsQueue(t *testing.T) {
	tf := newTestFleet(t, Options{WorkerToken: "s3cret"})
	// queued jobs (no worker yet) must survive everything below
	var ids []string
	for range 3 {
		ids = append(ids, tf.submit(Request{Spec: "echo kept"}).ID)
	}
	nc := tf.f.Client.Conn()
	cases := []struct {
		subj, body, want string
	}{
		{subjAPI + "submit", "{not json", "malformed message"},
		{subjAPI + "submit", `{"pool":"linux-x86_64","client":"c","spec":"x","bogus":1}`, "unknown field"},
		{subjAPI + "submit", `{"pool":"mips-plan9","client":"c","spec":"x"}`, `unknown pool "mips-plan9"`},
		{subjAPI + "submit", `{"pool":"linux-x86_64","client":"c d","spec":"x"}`, "field client"},
		{subjAPI + "submit", `{"pool":"linux-x86_64","client":"c","spec":""}`, "field spec"},
		{subjAPI + "submit", `{"pool":"linux-x86_64","client":"c","spec":"x","source":"../etc"}`, "field source"},
		{subjAPI + "submit", "", "empty message"},
		{subjHello, `{"name":"w9","pool":"linux-x86_64","capacity":1,"token":"wrong"}`, "wrong token"},
		{subjHello, `{"name":"w9","pool":"nope","capacity":1,"token":"s3cret"}`, `unknown pool "nope"`},
		{subjHello, `{"name":"w9","pool":"linux-x86_64","capacity":0,"token":"s3cret"}`, "field capacity"},
		{subjHello, `[1,2]`, "malformed message"},
		{subjBeat, `{"name":1}`, "malformed message"},
		{subjDone, `{"name":"w9","session":"x","id":"` + ids[0] + `","attempt":1,"result":{"outcome":"ok"}}`, ""},
		{subjDone, `{"name":"w9","session":"x","id":"j","attempt":1,"result":{"outcome":"great"}}`, "result.outcome"},
		{subjAPI + "cancel", `{"name":"no-such-job"}`, "unknown job"},
		{subjAPI + "set-rate", `{"client":"c","rate":-1}`, "field rate"},
		{subjAPI + "queue", `{"pool":"nope"}`, "unknown pool"},
		{subjAPI + "pause", `{"name":"ghost"}`, "unknown worker"},
	}
	for _, c := range cases {
		m, err := nc.Request(c.subj, []byte(c.body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", c.subj, c.body, err)
		}
		var r reply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("%s: reply %q: %v", c.subj, m.Data, err)
		}
		if c.want == "" {
			// a completion from an unknown worker is answered but not accepted
			var d doneReply
			_ = json.Unmarshal(r.Data, &d)
			if d.Accepted {
				t.Fatalf("%s %s: accepted", c.subj, c.body)
			}
			continue
		}
		if !strings.Contains(r.Error, c.want) {
			t.Fatalf("%s %s: error %q, want it to mention %q", c.subj, c.body, r.Error, c.want)
		}
	}
	// a worker process with the wrong token exits, saying why
	bad := tf.worker("intruder", "linux-x86_64", 1, "--token", "guess")
	select {
	case err := <-bad.done:
		if err == nil || !strings.Contains(bad.out.String(), "refused the token") {
			t.Fatalf("worker with a wrong token: %v\n%s", err, bad.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker with a wrong token still running")
	}
	tf.worker("w1", "linux-x86_64", 1)
	for _, id := range ids {
		if r := tf.wait(id).Result; r.Outcome != OutcomeOK {
			t.Fatalf("queued job %s after bad input: %+v", id, r)
		}
	}
}

func TestFleetHealthCheckPausesWorker(t *testing.T) {
	tf := newTestFleet(t, Options{})
	flag := t.TempDir() + "/broken"
	tf.worker("w1", "linux-x86_64", 1, "--health-command", "test ! -e "+flag)
	tf.waitWorkers(1)
	if err := writeFile(flag); err != nil {
		t.Fatal(err)
	}
	tf.waitFor("worker unhealthy", 20*time.Second, func() bool {
		w, err := tf.f.Client.Worker(tf.ctx, "w1")
		return err == nil && w.State == "unhealthy" && strings.Contains(w.Reason, "health command failed")
	})
	j := tf.submit(Request{Spec: "true"})
	time.Sleep(time.Second)
	if st := tf.job(j.ID).State; st != StateQueued {
		t.Fatalf("unhealthy worker got a job: %s", st)
	}
	if err := removeFile(flag); err != nil {
		t.Fatal(err)
	}
	if r := tf.wait(j.ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
}

func TestFleetRollingUpdate(t *testing.T) {
	tf := newTestFleet(t, Options{})
	tf.worker("w1", "linux-x86_64", 1)
	tf.worker("w2", "linux-x86_64", 1)
	tf.waitWorkers(2)
	before := map[string]string{}
	ws, _ := tf.f.Client.Workers(tf.ctx)
	for _, w := range ws {
		before[w.Name] = w.Instance
	}
	long := tf.submit(Request{Spec: "sleep 1.5"})
	tf.waitFor("running", 20*time.Second, func() bool { return tf.job(long.ID).State == StateRunning })
	out, err := tf.admin("update", "linux-x86_64")
	if err != nil {
		t.Fatalf("update: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1/2") || !strings.Contains(out, "2/2") {
		t.Fatalf("update output:\n%s", out)
	}
	ws, _ = tf.f.Client.Workers(tf.ctx)
	for _, w := range ws {
		if w.Instance == before[w.Name] || w.State != "active" {
			t.Fatalf("worker %s not restarted: %+v", w.Name, w)
		}
	}
	if r := tf.wait(long.ID).Result; r.Outcome != OutcomeOK || r.Attempts != 1 {
		t.Fatalf("job running during the update: %+v", r)
	}
}

func TestFleetNATSTokenRequired(t *testing.T) {
	tf := newTestFleet(t, Options{NATSToken: "natspass"})
	ctx, cancel := context.WithTimeout(tf.ctx, 2*time.Second)
	defer cancel()
	if nc, err := Connect(ctx, ConnOptions{URL: tf.f.Address}); err == nil {
		nc.Close()
		t.Fatal("connected without the NATS token")
	}
	tf.worker("w1", "linux-x86_64", 1, "--nats-token", "natspass")
	tf.waitWorkers(1)
	if r := tf.wait(tf.submit(Request{Spec: "true"}).ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
	if out, err := tf.admin("pools", "--nats-token", "natspass"); err != nil {
		t.Fatalf("admin with the token: %v\n%s", err, out)
	}
}
