package current

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "KILN_ENGINE_RECOVERY_HELPER"

// recoveryPipeline is run by a child process that gets SIGKILLed, then by the test.
func recoveryPipeline(dir string) AnyTerm {
	count := func(name string) {
		f, _ := os.OpenFile(filepath.Join(dir, "runs-"+name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		f.WriteString("run\n")
		f.Close()
	}
	fast := &Op[string, string]{Name: "fast", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		count("fast")
		j.Logf("fast %s", in)
		return in, nil
	}}
	slow := &Op[string, string]{Name: "slow", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		count("slow")
		for i := 0; ; i++ {
			j.Logf("tick %d pid %d", i, os.Getpid())
			if os.Getenv(helperEnv) == "" && i >= 3 {
				return "slow done", nil
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}}
	f := Do(fast, Return("a"))
	return Do(slow, Map(f, func(s string) string { return s + "!" }))
}

func TestRecoveryHelper(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestInterruptedJobsRecover")
	}
	e, err := Open(Config{StateDir: dir, Database: os.Getenv(helperEnv + "_DATABASE")})
	if err != nil {
		t.Fatal(err)
	}
	e.Run(context.Background(), recoveryPipeline(dir)) // runs until killed
}

func lines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestInterruptedJobsRecover kills a process running a job and expects the next engine
// on the same database to run it again, appending to its log.
func TestInterruptedJobsRecover(t *testing.T) {
	eachBackend(t, testInterruptedJobsRecover)
}

func testInterruptedJobsRecover(t *testing.T, cfg Config) {
	dir := cfg.StateDir
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecoveryHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_DATABASE="+cfg.Database)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	store, err := openStore(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer store.close()
	var logs logStore = &fileLogs{dir: filepath.Join(dir, "logs")}
	if strings.HasPrefix(cfg.Database, "postgres") {
		logs = &dbLogs{db: store.db}
	}
	// Wait for the fast job to finish and the slow one to have logged a few ticks.
	var before []byte
	eventually(t, "child running the slow job", func() bool {
		for id := int64(1); id <= 3; id++ {
			b, _ := readTail(logs, id)
			if strings.Count(string(b), "tick") >= 5 {
				return lines(filepath.Join(dir, "runs-fast")) == 1
			}
		}
		return false
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for id := int64(1); id <= 3; id++ {
		if b, _ := readTail(logs, id); strings.Contains(string(b), "tick") {
			before = b
		}
	}

	e := testEngine(t, cfg)
	jobs, err := e.Query(Query{Op: "slow"})
	if err != nil || len(jobs) != 1 || jobs[0].State != JobInterrupted {
		t.Fatalf("after the kill the slow job should be interrupted: %+v %v", jobs, err)
	}
	slowID := jobs[0].ID
	running(t, e, recoveryPipeline(dir))
	eventually(t, "slow job final", func() bool {
		d, err := e.Job(slowID)
		return err == nil && d.State == JobOK
	})
	if n := lines(filepath.Join(dir, "runs-fast")); n != 1 {
		t.Fatalf("the finished fast job ran %d times", n)
	}
	if n := lines(filepath.Join(dir, "runs-slow")); n != 2 {
		t.Fatalf("the interrupted slow job ran %d times, want 2 (once before the kill, once after)", n)
	}
	all, _ := e.Query(Query{Op: "slow"})
	if len(all) != 1 {
		t.Fatalf("the interrupted job was not resumed in place: %+v", all)
	}
	c, err := e.ReadLog(slowID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(c.Data), string(before)) {
		t.Fatal("log lines written before the kill were lost")
	}
	rest := string(c.Data[len(before):])
	if !strings.Contains(rest, "running it again") || !strings.Contains(rest, "succeeded") {
		t.Fatalf("log after restart: %q", rest)
	}
	d, _ := e.Job(slowID)
	if d.Attempts < 2 {
		t.Fatalf("attempts %d", d.Attempts)
	}
}
