package cluster

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestFleetRunsJobWithSourceAndLog(t *testing.T) {
	tf := newTestFleet(t, Options{})
	metrics := testenv.FreeAddr(t)
	tf.worker("w1", "linux-x86_64", 1, "--metrics", metrics)
	tf.waitWorkers(1)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from the source tree\n"), 0o644)
	digest, err := tf.f.Client.PutSource(tf.ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	j := tf.submit(Request{Spec: "cat hello.txt; echo line2", Source: digest})
	done := tf.wait(j.ID)
	if done.Result.Outcome != OutcomeOK {
		t.Fatalf("result %+v\nlog:\n%s", done.Result, tf.log(j.ID))
	}
	log := tf.log(j.ID)
	if !strings.Contains(log, "hello from the source tree\nline2\n") {
		t.Fatalf("log:\n%s", log)
	}
	// offsets: reading from the middle gives the tail
	var b strings.Builder
	off := int64(strings.Index(log, "line2"))
	if _, err := tf.f.Client.Log(tf.ctx, j.ID, off, true, &b); err != nil {
		t.Fatal(err)
	}
	if b.String() != log[off:] {
		t.Fatalf("log from %d = %q, want %q", off, b.String(), log[off:])
	}
	// the same source again comes from the worker's cache
	if r := tf.wait(tf.submit(Request{Spec: "cat hello.txt", Source: digest}).ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`kiln_fleet_worker_source_cache_total{result="hit",worker="w1"} 1`, `kiln_fleet_worker_source_cache_total{result="miss",worker="w1"} 1`,
		`kiln_fleet_worker_jobs_total{outcome="ok",worker="w1"} 2`, `kiln_fleet_worker_healthy{worker="w1"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %s:\n%s", want, body)
		}
	}
	f := tf.submit(Request{Spec: "echo oops; exit 3"})
	if r := tf.wait(f.ID).Result; r.Outcome != OutcomeFailed || !strings.Contains(r.Message, "exit status 3") {
		t.Fatalf("failing build: %+v", r)
	}
}

func TestFleetSpreadsByLoadAndAffinity(t *testing.T) {
	tf := newTestFleet(t, Options{})
	for i := 1; i <= 3; i++ {
		tf.worker(fmt.Sprint("w", i), "linux-x86_64", 2)
	}
	tf.waitWorkers(3)
	var ids []string
	for i := range 6 {
		ids = append(ids, tf.submit(Request{Spec: "sleep 1", CacheHint: fmt.Sprint("h", i)}).ID)
	}
	per := map[string]int{}
	where := map[string]string{}
	for i, id := range ids {
		j := tf.wait(id)
		if j.Result.Outcome != OutcomeOK {
			t.Fatalf("%s: %+v", id, j.Result)
		}
		per[j.Result.Worker]++
		where[fmt.Sprint("h", i)] = j.Result.Worker
	}
	for w, n := range per {
		if n != 2 {
			t.Fatalf("load not spread: %v (worker %s ran %d)", per, w, n)
		}
	}
	// the same hints again, in another order: each goes to the worker that built it
	for _, i := range []int{3, 0, 5, 1, 4, 2} {
		h := fmt.Sprint("h", i)
		j := tf.wait(tf.submit(Request{Spec: "true", CacheHint: h}).ID)
		if j.Result.Worker != where[h] {
			t.Fatalf("hint %s ran on %s, built before on %s", h, j.Result.Worker, where[h])
		}
	}
	ps, _ := tf.f.Client.Pools(tf.ctx)
	t.Logf("pools: %+v", ps)
}

func TestFleetWorkerKilledJobRetried(t *testing.T) {
	tf := newTestFleet(t, Options{})
	w1 := tf.worker("w1", "linux-x86_64", 1)
	tf.waitWorkers(1)
	j := tf.submit(Request{Spec: "echo started; sleep 2; echo finished"})
	tf.waitFor("job running on w1", 20*time.Second, func() bool { return tf.job(j.ID).State == StateRunning })
	tf.worker("w2", "linux-x86_64", 1)
	tf.waitWorkers(2)
	w1.kill()
	done := tf.wait(j.ID)
	if done.Result.Outcome != OutcomeOK || done.Result.Worker != "w2" || done.Result.Attempts != 2 {
		t.Fatalf("result %+v", done.Result)
	}
	hist := fmt.Sprint(done.History)
	if !strings.Contains(hist, "worker w1 lost, retried") {
		t.Fatalf("history does not tell the user: %s", hist)
	}
	if log := tf.log(j.ID); !strings.Contains(log, "worker w1 lost, retried") || !strings.Contains(log, "finished") {
		t.Fatalf("log:\n%s", log)
	}
	out, err := tf.admin("workers")
	if err != nil || !strings.Contains(out, "gone") {
		t.Fatalf("admin workers: %v\n%s", err, out)
	}
	if out, err := tf.admin("forget", "w1"); err != nil {
		t.Fatalf("forget: %v %s", err, out)
	}
	if _, err := tf.f.Client.Worker(tf.ctx, "w1"); err == nil {
		t.Fatal("forgotten worker still listed")
	}
}

func TestFleetSchedulerRestartLosesNothing(t *testing.T) {
	tf := newTestFleet(t, Options{Policy: Policy{LeaseTTL: 5 * time.Second, DefaultCost: time.Second}})
	tf.worker("w1", "linux-x86_64", 2)
	tf.worker("w2", "linux-x86_64", 2)
	tf.waitWorkers(2)
	trace := filepath.Join(t.TempDir(), "trace")
	var ids []string
	for range 16 {
		ids = append(ids, tf.submit(Request{Spec: fmt.Sprintf("echo start $KILN_JOB >> %s; sleep 0.7; echo end $KILN_JOB >> %s", trace, trace)}).ID)
	}
	running := func() int {
		n := 0
		for _, id := range ids {
			if tf.job(id).State == StateRunning {
				n++
			}
		}
		return n
	}
	tf.waitFor("jobs running", 30*time.Second, func() bool { return running() > 0 })
	// the scheduler alone (NATS stays up), as when a standalone scheduler is restarted
	tf.f.Scheduler.Stop()
	s, err := StartScheduler(tf.ctx, tf.f.nc, SchedulerOptions{Pools: DefaultPools, Policy: tf.opts.Policy})
	if err != nil {
		t.Fatal(err)
	}
	tf.f.Scheduler = s
	tf.waitFor("jobs running again", 30*time.Second, func() bool { return running() > 0 })
	// everything: NATS server and scheduler, as when kiln serve restarts
	tf.restart()
	for i, id := range ids {
		j := tf.wait(id)
		if j.Result.Outcome != OutcomeOK {
			t.Fatalf("job %d after restarts: %+v %v", i, j.Result, j.History)
		}
		if j.Attempt != 1 {
			t.Logf("job %d ran %d times: %v", i, j.Attempt, j.History)
		}
	}
	checkTrace(t, trace, len(ids))
}

func TestFleetPauseWithDrain(t *testing.T) {
	tf := newTestFleet(t, Options{})
	tf.worker("w1", "linux-x86_64", 1)
	tf.waitWorkers(1)
	j := tf.submit(Request{Spec: "sleep 1.5"})
	tf.waitFor("running", 20*time.Second, func() bool { return tf.job(j.ID).State == StateRunning })
	start := time.Now()
	out, err := tf.admin("pause", "w1", "--wait")
	if err != nil {
		t.Fatalf("admin pause: %v\n%s", err, out)
	}
	if !strings.Contains(out, "w1 drained") || tf.job(j.ID).State != StateDone {
		t.Fatalf("pause --wait returned before the drain (%s): %s", time.Since(start), out)
	}
	k := tf.submit(Request{Spec: "true"})
	time.Sleep(time.Second)
	if st := tf.job(k.ID).State; st != StateQueued {
		t.Fatalf("job on a paused worker: %s", st)
	}
	q, err := tf.f.Client.Queue(tf.ctx, "linux-x86_64", 10)
	if err != nil || len(q.Queued) != 1 || !strings.Contains(q.Queued[0].Why, "paused") {
		t.Fatalf("queue %+v %v", q, err)
	}
	if out, err := tf.admin("queue", "linux-x86_64"); err != nil || !strings.Contains(out, "#1") || !strings.Contains(out, "are paused") {
		t.Fatalf("admin queue: %v\n%s", err, out)
	}
	if out, err := tf.admin("unpause", "w1"); err != nil {
		t.Fatal(err, out)
	}
	if r := tf.wait(k.ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
}

func TestFleetCancelStopsProcess(t *testing.T) {
	tf := newTestFleet(t, Options{})
	tf.worker("w1", "linux-x86_64", 1)
	tf.waitWorkers(1)
	pidFile := filepath.Join(t.TempDir(), "pid")
	j := tf.submit(Request{Spec: fmt.Sprintf("sh -c 'echo $$ > %s; exec sleep 60'", pidFile)})
	var pid int
	tf.waitFor("build process started", 20*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	if err := tf.f.Client.Cancel(tf.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	done := tf.wait(j.ID)
	if done.Result.Outcome != OutcomeCancelled {
		t.Fatalf("%+v", done.Result)
	}
	tf.waitFor("build process gone", 5*time.Second, func() bool { return !processRuns(pid) })
}

func TestFleetTimeoutAndSecrets(t *testing.T) {
	tf := newTestFleet(t, Options{})
	secrets := t.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, "tok"), []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf.worker("w1", "linux-x86_64", 2, "--secrets-dir", secrets)
	tf.waitWorkers(1)
	slow := tf.submit(Request{Spec: "sleep 30", Timeout: Duration(time.Second)})
	sec := tf.submit(Request{Spec: `test "$SECRET_tok" = s3cr3t && echo secret-ok`, Secrets: []string{"tok"}})
	missing := tf.submit(Request{Spec: "true", Secrets: []string{"nope"}})
	if r := tf.wait(slow.ID).Result; r.Outcome != OutcomeInfrastructure || r.Message != "timed out after 1s" || r.Attempts != 1 {
		t.Fatalf("timeout: %+v", r)
	}
	if r := tf.wait(sec.ID).Result; r.Outcome != OutcomeOK || !strings.Contains(tf.log(sec.ID), "secret-ok") {
		t.Fatalf("secret: %+v\n%s", r, tf.log(sec.ID))
	}
	if r := tf.wait(missing.ID).Result; r.Outcome != OutcomeInfrastructure || !strings.Contains(r.Message, `secret "nope"`) || r.Attempts != 3 {
		t.Fatalf("missing secret: %+v", r)
	}
}

func TestFleetWorkerStopRetriesAtOnce(t *testing.T) {
	tf := newTestFleet(t, Options{Policy: Policy{LeaseTTL: 5 * time.Minute, DefaultCost: time.Second}})
	w1 := tf.worker("w1", "linux-x86_64", 1)
	tf.waitWorkers(1)
	j := tf.submit(Request{Spec: "sleep 1; echo finished"})
	tf.waitFor("running on w1", 20*time.Second, func() bool { return tf.job(j.ID).State == StateRunning })
	tf.worker("w2", "linux-x86_64", 1)
	tf.waitWorkers(2)
	_ = w1.cmd.Process.Signal(syscall.SIGTERM)
	done := tf.wait(j.ID) // well within the 5 min lease: the stopping worker reported the run
	if done.Result.Outcome != OutcomeOK || done.Result.Worker != "w2" || !strings.Contains(fmt.Sprint(done.History), "the worker is stopping") {
		t.Fatalf("%+v %v", done.Result, done.History)
	}
}
