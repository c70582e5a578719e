package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/pgtest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// startNATSProcesses runs a NATS cluster of n kiln nats processes on loopback.
func startNATSProcesses(t *testing.T, bin string, n int) (*natsCluster, []*workerProc) {
	t.Helper()
	c := &natsCluster{t: t, token: "cluster-secret"}
	var routes []string
	for range n {
		c.addrs = append(c.addrs, testenv.FreeAddr(t))
		routes = append(routes, testenv.FreeAddr(t))
	}
	dir := t.TempDir()
	var procs []*workerProc
	for i := range n {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, "nats-route://"+r)
			}
		}
		name := fmt.Sprintf("n%d", i+1)
		p := startProcess(t, name, bin, "nats", "--name", name, "--store", filepath.Join(dir, name), "--listen", c.addrs[i],
			"--cluster", "test", "--cluster-listen", routes[i], "--routes", strings.Join(others, ","), "--token", c.token)
		t.Cleanup(p.stop)
		procs = append(procs, p)
	}
	c.waitReady()
	return c, procs
}

// serveReplica is a kiln serve process of the end-to-end test.
type serveReplica struct {
	*workerProc
	url string
}

// health is the status and first line of the replica's /healthz, "" when it does not answer.
func (s *serveReplica) health() (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.url + "/healthz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	line, _, _ := strings.Cut(string(b), "\n")
	return resp.StatusCode, line
}

// serveHasDatabase reports whether kiln serve takes --database (the engine on PostgreSQL).
func serveHasDatabase(t *testing.T, bin string) bool {
	t.Helper()
	out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("kiln serve --help: %v\n%s", err, out)
	}
	return regexp.MustCompile(`(?m)^\s+--database `).Match(out)
}

// currentLeader reads the lease, giving up after a while: a request no node answers
// (while the cluster elects leaders) is asked again.
func currentLeader(ctx context.Context, cl *Client) (LeaderInfo, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return CurrentLeader(cctx, cl.Conn())
}

// TestHAEndToEnd runs the production shape on loopback: 3 kiln nats processes, 2 kiln
// scheduler processes, 4 kiln worker processes and 2 kiln serve replicas on one
// PostgreSQL database. While jobs flow it kills (SIGKILL) one NATS node, then the leading
// scheduler, then the active kiln serve. Every job must end once, ok, with its whole
// log; the standby kiln serve must take over; the time to recover from each loss is logged.
func TestHAEndToEnd(t *testing.T) {
	bin := kilnBinary(t)
	withServe := serveHasDatabase(t, bin)
	var pg *pgtest.Server
	if withServe {
		pg = pgtest.Start(t)
	} else {
		t.Log("kiln serve has no --database: the test runs without the kiln serve replicas")
	}
	c, nodes := startNATSProcesses(t, bin, 3)
	dir := t.TempDir()
	scheds := map[string]*workerProc{}
	for _, id := range []string{"s1", "s2"} {
		p := startProcess(t, id, bin, "scheduler", "--nats", c.urls(), "--nats-token", c.token, "--worker-token", c.token,
			"--replicas", "3", "--leader-lease", "2s", "--pool", "linux-x86_64", "--id", id)
		t.Cleanup(p.stop)
		scheds[id] = p
	}
	for i := range 4 {
		name := fmt.Sprintf("w%d", i+1)
		p := startProcess(t, name, bin, "worker", "--nats", c.urls(), "--token", c.token, "--name", name, "--pool", "linux-x86_64",
			"--capacity", "2", "--runner", "shell", "--state-dir", filepath.Join(dir, name), "--health-every", "500ms")
		t.Cleanup(p.stop)
	}
	var serves []*serveReplica
	if withServe {
		db := pg.NewDatabase(t)
		for _, name := range []string{"serve-a", "serve-b"} {
			addr := testenv.FreeAddr(t)
			p := startProcess(t, name, bin, "serve", "--service", "demo", "--demo-runner", "host", "--database", db,
				"--state-dir", filepath.Join(dir, name), "--listen", addr, "--base-url", "http://"+addr, "--admin-password", "secret-"+name)
			t.Cleanup(p.stop)
			s := &serveReplica{workerProc: p, url: "http://" + addr}
			serves = append(serves, s)
			if name == "serve-a" {
				waitUntil(t, "serve-a to be active", 2*time.Minute, func() bool { code, _ := s.health(); return code == http.StatusOK })
			}
		}
		waitUntil(t, "serve-b to stand by for serve-a", 2*time.Minute, func() bool {
			code, line := serves[1].health()
			return code == http.StatusServiceUnavailable && line == "standby; active: "+serves[0].url
		})
	}
	cl, err := NewClient(c.connect("client"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	waitUntil(t, "4 active workers", 2*time.Minute, func() bool {
		ws, err := cl.Workers(ctx)
		n := 0
		for _, w := range ws {
			if w.State == "active" {
				n++
			}
		}
		return err == nil && n == 4
	})

	const jobs, lines = 48, 8
	trace := filepath.Join(dir, "trace")
	spec := fmt.Sprintf(`echo start $KILN_JOB >> %s; for i in $(seq %d); do echo "line $i of $KILN_JOB"; sleep 0.1; done; echo end $KILN_JOB >> %s`, trace, lines, trace)
	type sub struct {
		id    string
		began time.Time
	}
	var subs []sub
	var nodeLost, leaderLost, serveLost time.Time
	var oldLeader string
	serveBack := make(chan time.Duration, 1)
	for i := range jobs {
		switch i {
		case jobs / 4:
			nodeLost = time.Now()
			nodes[0].kill()
		case jobs / 2:
			// the lease is unreadable, or not held, while the cluster elects new leaders
			waitUntil(t, "a scheduler to hold the lease", time.Minute, func() bool {
				info, ok, err := currentLeader(ctx, cl)
				oldLeader = info.ID
				return err == nil && ok
			})
			leaderLost = time.Now()
			scheds[oldLeader].kill()
		case 3 * jobs / 4:
			if withServe {
				serveLost = time.Now()
				serves[0].kill()
				go func() {
					for ctx.Err() == nil {
						if code, line := serves[1].health(); code == http.StatusOK && line == "active" {
							serveBack <- time.Since(serveLost)
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
					close(serveBack)
				}()
			}
		}
		began := time.Now()
		j, err := cl.Submit(ctx, Request{Pool: "linux-x86_64", Client: "test", Spec: spec})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		subs = append(subs, sub{j.ID, began})
		time.Sleep(100 * time.Millisecond)
	}
	var newLeader string
	waitUntil(t, "another scheduler to hold the lease", time.Minute, func() bool {
		info, ok, err := currentLeader(ctx, cl)
		newLeader = info.ID
		return err == nil && ok && info.ID != oldLeader
	})
	// recovery: from the loss to the start of the first job submitted after it
	recovery := map[string]time.Duration{}
	for _, s := range subs {
		j, err := cl.Wait(ctx, s.id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Result.Outcome != OutcomeOK {
			t.Fatalf("job %s: %+v %v", s.id, j.Result, j.History)
		}
		for what, at := range map[string]time.Time{"NATS node": nodeLost, "leading scheduler": leaderLost} {
			if _, seen := recovery[what]; !seen && s.began.After(at) {
				recovery[what] = j.Started.Sub(at)
			}
		}
		var b strings.Builder
		if _, err := cl.Log(ctx, s.id, 0, false, &b); err != nil {
			t.Fatal(err)
		}
		// a run retried after a loss starts a new section; the last one is the job's
		last := b.String()[max(0, strings.LastIndex(b.String(), "--- worker ")):]
		for n := 1; n <= lines; n++ {
			if want := fmt.Sprintf("line %d of %s\n", n, s.id); strings.Count(last, want) != 1 {
				t.Fatalf("last run in the log of %s has %q %d times, want once:\n%s", s.id, want, strings.Count(last, want), b.String())
			}
		}
	}
	runs := checkTrace(t, trace, jobs)
	reruns := 0
	for _, n := range runs {
		reruns += n - 1
	}
	serveTook := "not run"
	if withServe {
		took, ok := <-serveBack
		if !ok {
			t.Fatalf("serve-b did not take over from the killed serve-a")
		}
		serveTook = took.Round(time.Millisecond).String()
	}
	t.Logf("%d jobs ok, %d re-run after a loss; recovery after losing the NATS node %s, the leading scheduler (%s, then %s) %s; the standby kiln serve active after %s",
		jobs, reruns, recovery["NATS node"].Round(time.Millisecond), oldLeader, newLeader, recovery["leading scheduler"].Round(time.Millisecond), serveTook)
}

// A job submitted while the node leading the jobs bucket is lost (SIGKILL: no handover,
// the other nodes elect a new leader after seconds) is stored once the new leader is
// elected, not refused.
func TestSubmitWhileJobsLeaderLost(t *testing.T) {
	bin := kilnBinary(t)
	c, nodes := startNATSProcesses(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name   string
		stream string // the stream whose leader node is killed
	}{
		{"jobs bucket leader killed", "KV_" + bucketJobs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := StartHA(ctx, c.connect("scheduler"), SchedulerOptions{Pools: DefaultPools, Replicas: 3, LeaderLease: 2 * time.Second, ID: "s", Policy: testPolicyFast()})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop()
			waitUntil(t, "the scheduler leads", time.Minute, h.Leading)
			cl, err := NewClient(c.connect("client"))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if _, err := cl.Submit(ctx, Request{Pool: "linux-x86_64", Client: "test", Spec: "true"}); err != nil {
				t.Fatal(err)
			}
			var leader string
			waitUntil(t, "a leader of "+tc.stream, time.Minute, func() bool {
				ci, err := cl.ClusterInfo(ctx)
				if err != nil {
					return false
				}
				for _, s := range ci.Streams {
					if s.Name == tc.stream {
						leader = s.Leader
					}
				}
				return leader != ""
			})
			i := slices.IndexFunc(nodes, func(p *workerProc) bool { return p.name == leader })
			if i < 0 {
				t.Fatalf("%s is led by %q, not a node of the test", tc.stream, leader)
			}
			nodes[i].kill()
			j, err := cl.Submit(ctx, Request{Pool: "linux-x86_64", Client: "test", Spec: "true"})
			if err != nil {
				t.Fatalf("submit after losing %s: %v", leader, err)
			}
			waitUntil(t, "the job's record", time.Minute, func() bool {
				got, err := cl.Job(ctx, j.ID)
				return err == nil && got.ID == j.ID
			})
		})
	}
}
