package ocamlci

import (
	"context"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// publishingGit is a plain git source whose statuses are recorded, as a forge's would be.
type publishingGit struct {
	*forges.Git
	mu       sync.Mutex
	statuses map[string][]forge.Status // by commit, in order
	variants map[string][]forge.Variant
}

func (p *publishingGit) Publish(_ context.Context, ref forge.Ref, st forge.Status, vs []forge.Variant) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.statuses[ref.Commit] = append(p.statuses[ref.Commit], st)
	p.variants[ref.Commit] = vs
	return nil
}

func (p *publishingGit) last(commit string) (forge.Status, []forge.Variant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sts := p.statuses[commit]
	if len(sts) == 0 {
		return forge.Status{}, nil
	}
	return sts[len(sts)-1], p.variants[commit]
}

// A worker killed in the middle of a build is the infrastructure's failure: the forge
// is told so (an error, not a failed commit), whatever the message says.
func TestLostWorkerIsAnInfrastructureErrorOnTheForge(t *testing.T) {
	testenv.Short(t, "builds in a sandbox on a worker process that is killed")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	slow := commitTree(t, repoDir, "main", sampleProject("Hello", true), "slow test")

	pub := &publishingGit{statuses: map[string][]forge.Status{}, variants: map[string][]forge.Variant{}}
	platforms := matrix.Default()[:1]
	h := startCIWith(t, repoDir, platforms, harnessOptions{
		// No worker in the test process: the only one is a process of its own.
		workers: false,
		// The fleet gives up on a job at its first lost worker, and the engine does not
		// retry, so the test sees the final state at once.
		policy:  cluster.Policy{LeaseTTL: 2 * time.Second, WorkerTTL: 2 * time.Second, MaxAttempts: 1, DefaultCost: time.Second},
		retries: -1,
		configure: func(s *Service) {
			pub.Git = s.Forges.Sources()[0].(*forges.Git)
			set := &forges.Set{}
			set.Add("git", pub)
			s.Forges = set
		},
	})
	w := exec.Command(testenv.KilnBinary(t), "worker", "--nats", h.fleet.URL, "--name", "doomed", "--pool", platforms[0].Pool,
		"--capacity", "4", "--runner", "builder", "--images", imagetest.Store(t).Root(),
		"--state-dir", filepath.Join(h.state, "doomed"), "--health-every", "1h")
	out := &testenv.Buffer{}
	w.Stdout, w.Stderr = out, out
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.Wait(); close(done) }()
	kill := func() {
		syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
		<-done
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("worker output:\n%s", out)
		}
	})

	variant := platforms[0].Name
	waitVariantRunning(t, h, slow, variant)
	kill()

	c := h.waitCommit(slow, 5*time.Minute)
	if c.State != forge.Error {
		t.Errorf("commit state %s (%s), want error: the worker died, the commit did not fail", c.State, c.Title)
	}
	rec, _ := h.svc.Index.Variant(context.Background(), h.repo, slow, variant)
	if rec == nil || rec.State != forge.Error {
		t.Fatalf("variant record %+v, want state error", rec)
	}
	job, err := h.engine.Job(rec.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if job.FailureKind != current.FailWorkerLost {
		t.Errorf("engine job: kind %q (%s), want %q", job.FailureKind, job.Message, current.FailWorkerLost)
	}
	if !job.FailureKind.Infrastructure() {
		t.Errorf("a lost worker is not an infrastructure failure")
	}

	// What the forge was told.
	var st forge.Status
	var vs []forge.Variant
	deadline := time.Now().Add(time.Minute)
	for {
		if st, vs = pub.last(slow); st.State == forge.Error || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.State != forge.Error {
		t.Fatalf("the forge's last status is %q (%s), want error", st.State, st.Title)
	}
	found := false
	for _, v := range vs {
		if v.Name == variant {
			found = true
			if v.State != forge.Error {
				t.Errorf("the forge shows %s as %q (%s), want error", variant, v.State, v.Message)
			}
		}
		if v.State == forge.Failed {
			t.Errorf("the forge shows %s as a failure of the commit: %s", v.Name, v.Message)
		}
	}
	if !found {
		t.Errorf("the forge's status has no %s: %+v", variant, vs)
	}
}
