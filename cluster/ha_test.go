package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsCluster is a NATS cluster of in-process nodes, each with its own ports and store.
type natsCluster struct {
	t     *testing.T
	token string
	nodes []*server.Server
	addrs []string
}

func startNATSCluster(t *testing.T, n int) *natsCluster {
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
	nc := c.connect("probe")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready: %v", err)
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
			for i := range 2 {
				nc := c.connect(fmt.Sprintf("s%d", i))
				h, err := StartHA(ctx, nc, SchedulerOptions{Pools: DefaultPools, Replicas: 3, LeaderLease: lease, ID: fmt.Sprintf("s%d", i), Policy: testPolicyFast()})
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
		})
	}
}
