package snapshot

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// fsIDs reads a thread's file system uid and gid from /proc.
func fsIDs(t *testing.T, tid int) (uid, gid string, alive bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		return "", "", false
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 5 && f[0] == "Uid:" {
			uid = f[4]
		}
		if len(f) == 5 && f[0] == "Gid:" {
			gid = f[4]
		}
	}
	return uid, gid, true
}

// TestAsOwnerGivesTheThreadBack checks that the thread asOwner ran on lives on with
// its ids as they were: a thread that ends kills the children it started with a
// parent-death signal, such as a test's Gitea server or a step's runc.
func TestAsOwnerGivesTheThreadBack(t *testing.T) {
	testenv.RequireRoot(t)
	cases := []struct {
		name     string
		uid, gid uint32
		fail     bool
	}{
		{"as another owner", 100000, 100000, false},
		{"as root", 0, 0, false},
		{"when f fails", 100000, 100000, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tid int
			var inUID, inGID string
			err := asOwner(c.uid, c.gid, func() error {
				tid = unix.Gettid()
				inUID, inGID, _ = fsIDs(t, tid)
				if c.fail {
					return fmt.Errorf("f failed")
				}
				return nil
			})
			if (err != nil) != c.fail {
				t.Fatalf("asOwner: %v", err)
			}
			if want := fmt.Sprint(c.uid); inUID != want || inGID != fmt.Sprint(c.gid) {
				t.Fatalf("inside: fs ids %s:%s, want %d:%d", inUID, inGID, c.uid, c.gid)
			}
			// A thread that ends goes within milliseconds of its goroutine; give it ample time.
			for range 20 {
				time.Sleep(10 * time.Millisecond)
				uid, gid, alive := fsIDs(t, tid)
				if !alive {
					t.Fatalf("thread %d ended with asOwner's goroutine", tid)
				}
				if uid != "0" || gid != "0" {
					t.Fatalf("thread %d kept fs ids %s:%s", tid, uid, gid)
				}
			}
		})
	}
}

// TestChildSurvivesAsOwner runs asOwner many times beside a child started with a
// parent-death signal: the child must live on.
func TestChildSurvivesAsOwner(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "sleep")
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for range 200 {
		if err := asOwner(100000, 100000, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the child ended while asOwner ran: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
