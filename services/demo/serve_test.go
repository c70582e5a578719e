package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// kilnBinary is the kiln command, built once.
func kilnBinary(t *testing.T) string { return testenv.KilnBinary(t) }

// server is a `kiln serve` process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	out  *bytes.Buffer
}

func startServer(t *testing.T, bin, stateDir, addr, repo string) *server {
	t.Helper()
	s := &server{t: t, base: "http://" + addr, out: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "serve", "--service", "demo", "--state-dir", stateDir, "--listen", addr, "--demo-repo", repo, "--demo-poll", "200ms", "--demo-runner", "host")
	s.cmd.Env = append(os.Environ(), "KILN_ADMIN_PASSWORD=test-password")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("kiln serve output:\n%s", s.out)
		}
	})
	waitUntil(t, "the console to answer", func() bool {
		resp, err := http.Get(s.base + "/api/jobs")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

func (s *server) getJSON(path string, v any) error {
	resp, err := http.Get(s.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *server) log(id string) string {
	resp, err := http.Get(s.base + "/job/" + id + "/log")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type result struct {
	ID    string `json:"id"`
	Op    string `json:"op"`
	Build int    `json:"build"`
	State string `json:"state"`
}

func (s *server) results(op string) []result {
	var q struct {
		Results []result `json:"results"`
	}
	if err := s.getJSON("/api/query?op="+op+"&limit=100", &q); err != nil {
		s.t.Fatal(err)
	}
	return q.Results
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeSurvivesSIGKILL kills `kiln serve` while a job runs and starts it again: the
// finished results are not re-run, the interrupted job runs once more and finishes, and
// its log keeps every line written before the kill.
func TestServeSurvivesSIGKILL(t *testing.T) {
	testenv.RequireCommand(t, "git", "tar")
	bin := kilnBinary(t)
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	runs := filepath.Join(dir, "runs")
	ctx := context.Background()
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	check := fmt.Sprintf("#!/bin/sh\necho run >> %s\ni=1\nwhile [ $i -le 100 ]; do echo \"check line $i\"; sleep 0.1; i=$((i+1)); done\necho checked\n", runs)
	os.WriteFile(filepath.Join(repo, "check.sh"), []byte(check), 0o755)
	os.WriteFile(filepath.Join(repo, "README"), []byte("one\ntwo\nthree\n"), 0o644)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "first"}} {
		if err := gitRun(ctx, repo, args...); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	addr := testenv.FreeAddr(t)
	s := startServer(t, bin, state, addr, repo)

	// Wait until the other jobs have finished and the check job is running and has
	// written some lines (it takes 10 s in all).
	waitUntil(t, "checkout and count to finish", func() bool {
		c, n := s.results("demo-checkout"), s.results("demo-count-lines")
		return len(c) == 1 && c[0].State == "ok" && len(n) == 1 && n[0].State == "ok"
	})
	finished := map[string]result{}
	for _, op := range []string{"demo-checkout", "demo-count-lines"} {
		finished[op] = s.results(op)[0]
	}
	finishedLogs := map[string]string{}
	for op, r := range finished {
		finishedLogs[op] = s.log(r.ID)
	}
	var checkID, before string
	waitUntil(t, "the check job to run and log", func() bool {
		rs := s.results("demo-check")
		if len(rs) != 1 || rs[0].State != "running" {
			return false
		}
		checkID = rs[0].ID
		before = s.log(checkID)
		return strings.Count(before, "check line") >= 5
	})
	if strings.Contains(before, "checked") {
		t.Fatal("the check finished before it could be interrupted")
	}

	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.cmd.Wait()
	// What reached the log file up to the kill must survive too.
	logFile := filepath.Join(state, "logs")
	var atKill string
	filepath.WalkDir(logFile, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == checkID+".log" {
			b, _ := os.ReadFile(p)
			atKill = string(b)
		}
		return nil
	})
	if !strings.HasPrefix(atKill, before) {
		t.Fatalf("log file after the kill does not start with what the console showed before it")
	}

	s2 := startServer(t, bin, state, addr, repo)
	var final result
	waitUntil(t, "the interrupted check job to finish", func() bool {
		rs := s2.results("demo-check")
		if len(rs) == 0 {
			return false
		}
		final = rs[0]
		return final.State == "ok" || final.State == "failed"
	})
	if final.State != "ok" {
		t.Errorf("interrupted job ended %s:\n%s", final.State, s2.log(final.ID))
	}
	if rs := s2.results("demo-check"); len(rs) != 1 || rs[0].ID != checkID {
		t.Errorf("check results after the restart: %+v, want job %s run again", rs, checkID)
	}
	after := s2.log(final.ID)
	if !strings.HasPrefix(after, atKill) {
		t.Errorf("the log lost lines written before the kill:\nbefore:\n%s\nafter:\n%s", atKill, after)
	}
	if !strings.Contains(after, "checked") {
		t.Errorf("the rerun's output is not in the log:\n%s", after)
	}
	b, _ := os.ReadFile(runs)
	if n := strings.Count(string(b), "run"); n != 2 {
		t.Errorf("the check script ran %d times, want 2 (interrupted, then once more)", n)
	}
	for op, r := range finished {
		rs := s2.results(op)
		if len(rs) != 1 || rs[0].ID != r.ID || rs[0].Build != r.Build || rs[0].State != "ok" {
			t.Errorf("%s re-ran after the restart: %+v, had %+v", op, rs, r)
		}
		if got := s2.log(r.ID); got != finishedLogs[op] {
			t.Errorf("log of finished %s changed after the restart", op)
		}
	}

	// kiln ctl against the restarted server.
	ctl := func(args ...string) string {
		c := exec.Command(bin, append([]string{"ctl", "--server", s2.base}, args...)...)
		c.Env = append(os.Environ(), "KILN_PASSWORD=test-password")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("kiln ctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := ctl("query", "--op", "demo-check"); !strings.Contains(out, checkID) || !strings.Contains(out, "ok") {
		t.Errorf("ctl query:\n%s", out)
	}
	if out := ctl("log", "--follow", checkID); !strings.Contains(out, "check line 100") || !strings.Contains(out, "checked") {
		t.Errorf("ctl log --follow:\n%s", out)
	}
	if out := ctl("--user", "admin", "rebuild", checkID); strings.TrimSpace(out) == "" || strings.TrimSpace(out) == checkID {
		t.Errorf("ctl rebuild printed %q, want the new job's id", out)
	}
	waitUntil(t, "the rebuilt check to finish", func() bool {
		rs := s2.results("demo-check")
		return len(rs) == 2 && rs[0].State == "ok" && rs[0].Build == 2
	})
	if out := ctl("--user", "admin", "confirm", "average"); !strings.Contains(out, "level average") {
		t.Errorf("ctl confirm:\n%s", out)
	}
	if out, err := exec.Command(bin, "ctl", "--server", s2.base, "log", "424242").CombinedOutput(); err == nil || !strings.Contains(string(out), "404") {
		t.Errorf("ctl log of an unknown job: %v\n%s", err, out)
	}
	if out := ctl("job", checkID); !strings.Contains(out, "state:     ok") || !strings.Contains(out, "history of this key:") {
		t.Errorf("ctl job:\n%s", out)
	}
	if out := ctl("jobs"); !strings.HasPrefix(out, "ID  STATE") {
		t.Errorf("ctl jobs:\n%s", out)
	}
	token := strings.TrimSpace(ctl("--user", "admin", "login"))
	if out, err := exec.Command(bin, "ctl", "--server", s2.base, "--token", token, "cancel", checkID).CombinedOutput(); err == nil || !strings.Contains(string(out), "409") {
		t.Errorf("ctl cancel of a finished job: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "ctl", "--server", s2.base, "--token", "forged", "rebuild", checkID).CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Errorf("ctl rebuild with a forged token: %v\n%s", err, out)
	}
	if err := s2.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := s2.cmd.Wait(); err != nil {
		t.Errorf("kiln serve after SIGINT: %v", err)
	}

	// Bad flags are refused with a message naming them, before anything starts.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--confirm", "reckless"}, "--confirm"},
		{[]string{"--service", "jenkins"}, "--service"},
		{[]string{"--anonymous", "king"}, "--anonymous"},
		{[]string{"--listen", "nowhere"}, "--listen"},
		{[]string{"--demo-runner", "cloud"}, "--demo-runner"},
		{[]string{"--admin-password", "x", "--demo-repo", filepath.Join(dir, "no-repo")}, "no-repo"},
	} {
		c := exec.Command(bin, append([]string{"serve", "--service", "demo", "--state-dir", state, "--listen", testenv.FreeAddr(t)}, tc.args...)...)
		c.Env = append(os.Environ(), "KILN_ADMIN_PASSWORD=test-password")
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = c.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
		}
		if err == nil || !strings.Contains(string(out), tc.says) {
			t.Errorf("kiln serve %v: %v, output lacks %q:\n%s", tc.args, err, tc.says, out)
		}
	}
}
