package cluster

import (
	"testing"
	"time"
)

// FuzzMessages feeds arbitrary bytes to the decoders of every message the scheduler
// accepts and to a core, which must refuse bad input with an error, never panic.
func FuzzMessages(f *testing.F) {
	f.Add([]byte(`{"pool":"p","client":"c","spec":"x","cache_hint":"h","urgent":true,"timeout":"1m"}`))
	f.Add([]byte(`{"name":"w","pool":"p","capacity":2,"running":[{"id":"j","attempt":1}]}`))
	f.Add([]byte(`{"name":"w","session":"s","running":[{"id":"j","attempt":1}],"health":""}`))
	f.Add([]byte(`{"name":"w","session":"s","id":"j","attempt":1,"result":{"outcome":"ok"}}`))
	f.Add([]byte(`{"pool":"p","limit":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		clk := newClock()
		c := newCore(DefaultPolicy(), []string{"p"}, clk.now, hooks{})
		var r Request
		if decodeStrict(b, &r) == nil {
			if j, err := c.submit(r); err == nil && j.State != StateQueued && j.State != StateRunning {
				t.Fatalf("accepted job in state %s", j.State)
			}
		}
		var h helloMsg
		if decodeStrict(b, &h) == nil {
			if ses, err := c.hello(h.WorkerSpec, h.Running); err == nil {
				c.heartbeat(beat{Name: h.Name, Session: ses, Running: h.Running})
			}
		}
		var bt beat
		if decodeStrict(b, &bt) == nil {
			c.heartbeat(bt)
		}
		var d doneMsg
		if decodeStrict(b, &d) == nil {
			c.complete(d.Name, d.Session, d.JobRef, d.Result)
		}
		var q queueMsg
		if decodeStrict(b, &q) == nil {
			_, _ = c.queue(q.Pool, 10)
		}
		clk.add(time.Hour)
		c.tick()
		if err := c.invariants(); err != nil {
			t.Fatal(err)
		}
	})
}
