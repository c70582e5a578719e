package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestFleetNetworkCutLeaseExpiry puts a worker in its own network namespace, cuts its
// link in the middle of a job, and checks that the lease expires, the job is re-queued and
// completes on another worker, and that the cut-off worker's completion, delivered when
// the link returns, is ignored.
func TestFleetNetworkCutLeaseExpiry(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	bin := kilnBinary(t)
	ns := fmt.Sprintf("kilnfleet%d", os.Getpid()%100000)
	hostIf, nsIf := ns+"h", ns+"n"
	sub := os.Getpid()%200 + 20
	hostIP, nsIP := fmt.Sprintf("10.213.%d.1", sub), fmt.Sprintf("10.213.%d.2", sub)
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipCmd(t, "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	ipCmd(t, "link", "set", nsIf, "netns", ns)
	ipCmd(t, "addr", "add", hostIP+"/30", "dev", hostIf)
	ipCmd(t, "link", "set", hostIf, "up")
	ipCmd(t, "netns", "exec", ns, "ip", "addr", "add", nsIP+"/30", "dev", nsIf)
	ipCmd(t, "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	ipCmd(t, "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	port := strings.Split(testenv.FreeAddr(t), ":")[1]
	tf := newTestFleet(t, Options{Listen: "0.0.0.0:" + port, Policy: Policy{LeaseTTL: 4 * time.Second, DefaultCost: time.Second}})
	tf.listen = "127.0.0.1:" + port
	tf.startProc("cut", "ip", "netns", "exec", ns, bin, "worker", "--nats", "nats://"+hostIP+":"+port, "--name", "cut",
		"--token", tf.f.WorkerToken, "--capacity", "2", "--runner", "shell", "--state-dir", t.TempDir(), "--health-every", "1s")
	tf.waitWorkers(1)
	// j finishes while the worker is cut off; long is still running when its lease runs out
	j := tf.submit(Request{Spec: "echo begin; sleep 1.5; echo end"})
	pids := filepath.Join(t.TempDir(), "pids")
	long := tf.submit(Request{Spec: fmt.Sprintf("sh -c 'echo $$ >> %s; exec sleep 8'", pids)})
	tf.waitFor("jobs running on the namespaced worker", 20*time.Second, func() bool {
		k, l := tf.job(j.ID), tf.job(long.ID)
		return k.State == StateRunning && k.Worker == "cut" && l.State == StateRunning && l.Worker == "cut"
	})
	tf.waitFor("long job's process started", 10*time.Second, func() bool { return len(readPids(pids)) == 1 })
	firstPid := readPids(pids)[0]
	tf.worker("other", "linux-x86_64", 1)
	tf.waitWorkers(2)
	cut := time.Now()
	ipCmd(t, "netns", "exec", ns, "ip", "link", "set", nsIf, "down")
	tf.waitFor("worker declared lost", 30*time.Second, func() bool {
		w, err := tf.f.Client.Worker(tf.ctx, "cut")
		return err == nil && w.State == "gone"
	})
	t.Logf("worker declared lost %s after the cut", time.Since(cut).Round(time.Millisecond))
	// the cut-off worker stopped the long job itself when it could no longer renew the
	// lease, before the job could start elsewhere: it never runs twice at once
	tf.waitFor("long job started again elsewhere", 60*time.Second, func() bool { return len(readPids(pids)) >= 2 })
	if processRuns(firstPid) {
		t.Fatalf("the first run (pid %d) still runs while the job started again", firstPid)
	}
	if r := tf.wait(long.ID).Result; r.Outcome != OutcomeOK || r.Worker != "other" || r.Attempts != 2 {
		t.Fatalf("long job: %+v", r)
	}
	done := tf.wait(j.ID)
	if done.Result.Outcome != OutcomeOK || done.Result.Worker != "other" || done.Result.Attempts != 2 {
		t.Fatalf("result after the cut: %+v\n%v", done.Result, done.History)
	}
	if !strings.Contains(fmt.Sprint(done.History), "worker cut lost, retried") {
		t.Fatalf("history: %v", done.History)
	}
	ipCmd(t, "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	tf.waitFor("cut-off worker back", 60*time.Second, func() bool {
		w, err := tf.f.Client.Worker(tf.ctx, "cut")
		return err == nil && w.State == "active"
	})
	tf.waitFor("late completion reported and ignored", 30*time.Second, func() bool {
		return strings.Contains(fmt.Sprint(tf.job(j.ID).History), "late completion of attempt 1 from worker cut ignored")
	})
	final := tf.job(j.ID)
	if final.Result.Worker != "other" || final.Result.Attempts != 2 || final.State != StateDone {
		t.Fatalf("result changed after the worker came back: %+v", final.Result)
	}
	t.Logf("history: %v", final.History)
	// the returned worker takes new work again
	k := tf.submit(Request{Spec: "true"})
	if r := tf.wait(k.ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
}

func readPids(path string) []int {
	b, _ := os.ReadFile(path)
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
