package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// natsCluster is a NATS cluster of in-process nodes, each with its own ports and store.
type natsCluster struct {
	t     testing.TB
	token string
	nodes []*server.Server
	addrs []string
}

func startNATSCluster(t testing.TB, n int) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, token: "cluster-secret"}
	routes := make([]string, n)
	for i := range n {
		c.addrs = append(c.addrs, testenv.FreeAddr(t))
		routes[i] = "nats-route://" + testenv.FreeAddr(t)
	}
	dir := t.TempDir()
	for i := range n {
		srv, err := StartNode(NodeOptions{Name: fmt.Sprintf("n%d", i+1), StoreDir: filepath.Join(dir, fmt.Sprint(i+1)),
			Listen: c.addrs[i], Cluster: "test", ClusterListen: strings.TrimPrefix(routes[i], "nats-route://"), Routes: routes, Token: c.token})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, srv)
		t.Cleanup(srv.Shutdown)
	}
	c.waitReady()
	return c
}

// waitReady waits until the cluster's JetStream answers.
func (c *natsCluster) waitReady() {
	c.t.Helper()
	js, err := jetstream.New(c.connect("probe"))
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream cluster not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// urls are the nodes' client URLs, comma-separated.
func (c *natsCluster) urls() string {
	var us []string
	for _, a := range c.addrs {
		us = append(us, "nats://"+a)
	}
	return strings.Join(us, ",")
}

func (c *natsCluster) connect(name string) *nats.Conn {
	c.t.Helper()
	nc, err := Connect(context.Background(), ConnOptions{URL: c.urls(), Name: name, Token: c.token})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

func TestNATSClusterReplicas(t *testing.T) {
	testenv.Short(t, "runs a 3-node NATS cluster")
	for _, tc := range []struct {
		name     string
		replicas int
		want     int
	}{
		{"default keeps one copy", 0, 1},
		{"three copies on three nodes", 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := startNATSCluster(t, 3).connect("test")
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			h, err := StartHA(ctx, nc, SchedulerOptions{Pools: DefaultPools, Replicas: tc.replicas, LeaderLease: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop()
			waitUntil(t, "the scheduler leads", 20*time.Second, h.Leading)
			for _, name := range []string{"KV_" + bucketJobs, "KV_" + bucketState, "KV_" + bucketLeader, streamLogs, "OBJ_" + bucketSources} {
				s, err := js.Stream(ctx, name)
				if err != nil {
					t.Fatalf("stream %s: %v", name, err)
				}
				info, err := s.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.Config.Replicas != tc.want {
					t.Errorf("stream %s has %d replicas, want %d", name, info.Config.Replicas, tc.want)
				}
			}
		})
	}
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHALeaderTakeover(t *testing.T) {
	testenv.Short(t, "runs a 3-node NATS cluster")
	c := startNATSCluster(t, 3)
	const lease = time.Second
	for _, tc := range []struct {
		name string
		// end ends the leader, as a stop or a death
		end func(h *HAScheduler, nc *nats.Conn)
		// within bounds the takeover
		within time.Duration
	}{
		{"leader stops and releases the lease", func(h *HAScheduler, _ *nats.Conn) { h.Stop() }, lease},
		{"leader loses NATS and its lease lapses", func(_ *HAScheduler, nc *nats.Conn) { nc.Close() }, 3 * lease},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var hs []*HAScheduler
			var conns []*nats.Conn
			var regs []*prometheus.Registry
			for i := range 2 {
				nc := c.connect(fmt.Sprintf("s%d", i))
				reg := prometheus.NewRegistry()
				regs = append(regs, reg)
				h, err := StartHA(ctx, nc, SchedulerOptions{Pools: DefaultPools, Replicas: 3, LeaderLease: lease, ID: fmt.Sprintf("s%d", i), Policy: testPolicyFast(), Registry: reg})
				if err != nil {
					t.Fatal(err)
				}
				defer h.Stop()
				hs, conns = append(hs, h), append(conns, nc)
			}
			leaders := func() (n, which int) {
				for i, h := range hs {
					if h.Leading() {
						n, which = n+1, i
					}
				}
				return n, which
			}
			waitUntil(t, "a leader", 20*time.Second, func() bool { n, _ := leaders(); return n == 1 })
			_, old := leaders()
			info, ok, err := CurrentLeader(ctx, conns[1-old])
			if err != nil || !ok || info.ID != hs[old].ID() {
				t.Fatalf("lease names %+v (ok %v, err %v), want %s", info, ok, err, hs[old].ID())
			}
			start := time.Now()
			tc.end(hs[old], conns[old])
			for !hs[1-old].Leading() {
				if n, _ := leaders(); n > 1 {
					t.Fatal("two schedulers lead at once")
				}
				if time.Since(start) > tc.within+2*time.Second {
					t.Fatalf("no takeover within %s", time.Since(start))
				}
				time.Sleep(10 * time.Millisecond)
			}
			took := time.Since(start)
			t.Logf("takeover after %s (lease %s)", took.Round(time.Millisecond), lease)
			if hs[old].Leading() {
				t.Fatal("the old leader still leads")
			}
			for i, want := range map[int]float64{old: 0, 1 - old: 1} {
				if got := gaugeValue(t, regs[i], "kiln_cluster_scheduler_leader"); got != want {
					t.Errorf("scheduler %d: kiln_cluster_scheduler_leader = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestClusterInfoShowsLeaderAndReplicas(t *testing.T) {
	testenv.Short(t, "runs a 3-node NATS cluster")
	c := startNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	h, err := StartHA(ctx, c.connect("scheduler"), SchedulerOptions{Pools: DefaultPools, Replicas: 3, LeaderLease: time.Second, ID: "the-leader", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	waitUntil(t, "the scheduler leads", 20*time.Second, h.Leading)
	cl, err := NewClient(c.connect("admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, tc := range []struct {
		name    string
		before  func()
		offline int // followers shown offline or behind, over all streams, at least
	}{
		{"all nodes up", func() {}, 0},
		{"a node lost", func() { c.nodes[2].Shutdown() }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.before()
			var ci *ClusterInfo
			waitUntil(t, "the cluster state", 30*time.Second, func() bool {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				defer ccancel()
				ci, err = cl.ClusterInfo(cctx)
				if err != nil || ci.Scheduler == nil || len(ci.Streams) != 5 {
					return false
				}
				down := 0
				for _, s := range ci.Streams {
					if s.Leader == "" || len(s.Replicas) != 2 {
						return false
					}
					for _, r := range s.Replicas {
						if r.Offline || !r.Current {
							down++
						}
					}
				}
				return down >= tc.offline
			})
			if tc.offline == 0 {
				if got := gaugeValue(t, reg, "kiln_cluster_stream_replica_current"); got != 1 {
					t.Errorf("kiln_cluster_stream_replica_current = %v, want 1", got)
				}
			}
			if ci.Scheduler.ID != "the-leader" {
				t.Fatalf("scheduler leader %q, want the-leader", ci.Scheduler.ID)
			}
		})
	}
}

// gaugeValue is the least value of the gauge's series.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			least := mf.GetMetric()[0].GetGauge().GetValue()
			for _, m := range mf.GetMetric() {
				least = min(least, m.GetGauge().GetValue())
			}
			return least
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestStartNodeRefusesBadOptions(t *testing.T) {
	good := NodeOptions{Name: "n1", StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Cluster: "c", ClusterListen: "127.0.0.1:0"}
	for _, tc := range []struct {
		name   string
		change func(*NodeOptions)
		want   string
	}{
		{"no name", func(o *NodeOptions) { o.Name = "" }, "no name"},
		{"no store", func(o *NodeOptions) { o.StoreDir = "" }, "no store folder"},
		{"no cluster name", func(o *NodeOptions) { o.Cluster = "" }, "no cluster name"},
		{"bad client address", func(o *NodeOptions) { o.Listen = "4222" }, `client address "4222"`},
		{"bad cluster port", func(o *NodeOptions) { o.ClusterListen = "127.0.0.1:x" }, `cluster port "x"`},
		{"bad route", func(o *NodeOptions) { o.Routes = []string{"10.0.0.2"} }, `route "10.0.0.2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.change(&o)
			srv, err := StartNode(o)
			if err == nil {
				srv.Shutdown()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// A run that ends while no scheduler answers is reported to the next one, which must take
// the completion rather than run the job again.
func TestSchedulerChangeKeepsUndeliveredCompletion(t *testing.T) {
	tf := newTestFleet(t, Options{})
	startInProcessWorker(t, tf, "w1")
	mark := filepath.Join(t.TempDir(), "mark")
	j := tf.submit(Request{Spec: "sleep 0.5; touch " + mark})
	if _, err := tf.f.Client.WaitStarted(tf.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	tf.f.Scheduler.Stop()
	tf.waitFor("the run to end", 10*time.Second, func() bool { return fileExists(mark) })
	time.Sleep(300 * time.Millisecond) // the worker tries to report it, and no scheduler answers
	s, err := StartScheduler(tf.ctx, tf.f.nc, SchedulerOptions{Pools: DefaultPools, Policy: tf.opts.Policy})
	if err != nil {
		t.Fatal(err)
	}
	tf.f.Scheduler = s
	done := tf.wait(j.ID)
	if done.Result.Outcome != OutcomeOK || done.Attempt != 1 {
		t.Fatalf("outcome %s after %d attempts, want ok after 1: %v", done.Result.Outcome, done.Attempt, done.History)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// After a scheduler change, a worker may report a run before it joins the new scheduler:
// the run's attempt is the fence, so the completion is taken when it matches the record.
func TestCompletionFromWorkerNotYetJoined(t *testing.T) {
	for _, tc := range []struct {
		name     string
		worker   string
		attempt  int
		accepted bool
	}{
		{"the run on record", "w1", 1, true},
		{"an older attempt", "w1", 0, false},
		{"another worker", "w2", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := newCore(DefaultPolicy(), []string{"p"}, clk.now, hooks{})
			c.restore([]*Job{{Request: Request{ID: "j1", Pool: "p", Client: "c", Spec: "x"}, State: StateRunning, Worker: "w1", Attempt: 1,
				Submitted: clk.now(), Started: clk.now(), LeaseUntil: clk.now().Add(time.Minute)}})
			ok, why := c.complete(tc.worker, "a session of the last scheduler", JobRef{"j1", tc.attempt}, Result{Outcome: OutcomeOK})
			if ok != tc.accepted {
				t.Fatalf("accepted %v (%s), want %v", ok, why, tc.accepted)
			}
			if want := map[bool]JobState{true: StateDone, false: StateRunning}[tc.accepted]; c.jobs["j1"].State != want {
				t.Fatalf("job %s, want %s", c.jobs["j1"].State, want)
			}
		})
	}
}

// A chunk of job log that JetStream cannot store at first (here: the logs stream is not
// there yet, as while a stream leader is elected) is sent again until it is stored.
func TestLogWriterRetriesUntilStored(t *testing.T) {
	srv, err := StartNATS(t.TempDir(), "127.0.0.1:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := Connect(context.Background(), ConnOptions{URL: srv.ClientURL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		delay time.Duration // before the stream exists
	}{
		{"stream there", 0},
		{"stream late", 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = js.DeleteStream(context.Background(), streamLogs)
			made := make(chan error, 1)
			go func() {
				time.Sleep(tc.delay)
				_, _, err := ensureStreams(context.Background(), js, 1)
				made <- err
			}()
			if tc.delay == 0 {
				if err := <-made; err != nil {
					t.Fatal(err)
				}
			}
			lw := newLogWriter(js, "job-"+strings.ReplaceAll(tc.name, " ", "-"), 1, slog.Default())
			_, _ = lw.Write([]byte("line 1\n"))
			lw.Close()
			if tc.delay > 0 {
				if err := <-made; err != nil {
					t.Fatal(err)
				}
			}
			st, err := js.Stream(context.Background(), streamLogs)
			if err != nil {
				t.Fatal(err)
			}
			m, err := st.GetLastMsgForSubject(context.Background(), subjLog+lw.id)
			if err != nil {
				t.Fatalf("log not stored: %v", err)
			}
			if string(m.Data) != "line 1\n" {
				t.Fatalf("stored %q", m.Data)
			}
		})
	}
}
