package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// jobsDeployer is a deployer of validConfig whose steps are jobs of an engine running
// its pipeline.
func jobsDeployer(t *testing.T) (*Deployer, *current.Engine) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "deployer.yaml")
	if err := os.WriteFile(file, []byte(validConfig(t, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{ConfigFile: file, StateDir: filepath.Join(dir, "state"), Register: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), Jobs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	e, _ := startEngine(t, d, dir)
	return d, e
}

// TestStepJobs: a step run with jobs on is an engine job of its operation, with the
// step's log, its failure and the failure's kind; infrastructure failures are not
// retried by the engine (the deployer did); a step within a job runs in that job.
func TestStepJobs(t *testing.T) {
	d, e := jobsDeployer(t)
	hostDown := fmt.Errorf("deploy: %w", &HostError{Host: "web1", Kind: ErrUnreachable, Msg: "Connection refused"})
	for _, tc := range []struct {
		name      string
		op        string
		err       error
		wantState current.JobState
		wantKind  current.FailureKind
	}{
		{name: "a deploy that goes live", op: OpDeploy, wantState: current.JobOK},
		{name: "a build that fails is the work's failure", op: OpBuild, err: errors.New("no Dockerfile"), wantState: current.JobFailed, wantKind: current.FailWork},
		{name: "an unreachable host is the infrastructure's, run once", op: OpDeploy, err: hostDown, wantState: current.JobFailed, wantKind: "host-unreachable"},
		{name: "a failed health check is the work's failure", op: OpDeploy, err: &HealthError{Output: "503"}, wantState: current.JobFailed, wantKind: current.FailWork},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			id, err := d.inJob(t.Context(), tc.op, "web", "step "+tc.name, func(ctx context.Context, log io.Writer) error {
				runs++
				fmt.Fprintf(log, "the step of %s\n", tc.name)
				if jobOf(ctx) == nil {
					t.Error("the step's context has no job")
				}
				return tc.err
			})
			if !errors.Is(err, tc.err) {
				t.Fatalf("inJob error %v, want %v", err, tc.err)
			}
			j := waitJob(t, e, id)
			if j.Op != tc.op || j.State != tc.wantState || j.FailureKind != tc.wantKind || j.Attempts != 1 || runs != 1 {
				t.Errorf("job %+v after %d runs; want %s %s, kind %q, 1 attempt", j, runs, tc.op, tc.wantState, tc.wantKind)
			}
			log, err := e.ReadLog(id, 0, 1<<20)
			if err != nil || !strings.Contains(string(log.Data), "the step of "+tc.name) {
				t.Errorf("job log %q (%v)", log.Data, err)
			}
		})
	}
	t.Run("a step within a job runs in it", func(t *testing.T) {
		var inner string
		outer, err := d.inJob(t.Context(), OpDeploy, "web", "outer", func(ctx context.Context, log io.Writer) error {
			var err error
			inner, err = d.inJob(ctx, OpHealth, "web", "inner", func(ctx context.Context, log io.Writer) error {
				fmt.Fprintln(log, "inner step")
				return nil
			})
			return err
		})
		if err != nil || inner != outer {
			t.Fatalf("inner step in job %q, outer %q (%v)", inner, outer, err)
		}
		waitJob(t, e, outer)
		if log, _ := e.ReadLog(outer, 0, 1<<20); !strings.Contains(string(log.Data), "inner step") {
			t.Errorf("outer job's log %q", log.Data)
		}
	})
	t.Run("a step the engine puts aside goes on when resumed", func(t *testing.T) {
		calls := 0
		id, err := d.runInJob(t.Context(), OpBuildArch, "web", "put aside", true, func(ctx context.Context, log io.Writer) error {
			calls++
			if calls == 1 {
				// As a fleet build queued on the fleet: the job waits without a goroutine.
				return current.Await("queued", func(_ context.Context, resume func()) { go resume() })
			}
			fmt.Fprintln(log, "resumed")
			return nil
		})
		if err != nil || calls != 2 {
			t.Fatalf("error %v after %d calls, want none after 2", err, calls)
		}
		if j := waitJob(t, e, id); j.State != current.JobOK {
			t.Errorf("job %+v", j)
		}
	})
	t.Run("a step given up before it starts never runs", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		ran := false
		if _, err := d.inJob(ctx, OpDeploy, "web", "given up", func(context.Context, io.Writer) error { ran = true; return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		if ran {
			t.Error("the step ran")
		}
	})
}

// waitJob waits for job id to finish (the engine records it after the step returned);
// the deadline only bounds a hang.
func waitJob(t *testing.T, e *current.Engine, id string) current.JobInfo {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j, err := e.Job(id)
		if err == nil && (j.State == current.JobOK || j.State == current.JobFailed) {
			return j.JobInfo
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not finished: %+v (%v)", id, j, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeSpecs is a SpecRunner whose builds return err, or a snapshot named after the pool.
type fakeSpecs struct{ err error }

func (f fakeSpecs) Build(_ context.Context, _ io.Writer, pool string, _ *spec.Spec, _ string) (string, error) {
	return "snapshot-of-" + pool, f.err
}

func (f fakeSpecs) Mount(string) (string, func(), error) { return "", nil, errors.New("not kept") }

// TestSpecBuildFailures: a spec's build failing for the commit's sake is recorded as not
// deployable; one failing for the infrastructure's sake (a fleet worker lost) is not
// recorded, so the next poll builds it again.
func TestSpecBuildFailures(t *testing.T) {
	testenv.RequireCommand(t, "git")
	repo := &webRepo{Dir: t.TempDir()}
	repo.git(t, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo.Dir, "deploy.spec"), []byte("((from debian) (run (shell true)))\n"), 0o644)
	commit := repo.commit(t, "v1")
	for _, tc := range []struct {
		name      string
		err       error
		wantState forge.State
		kept      bool
	}{
		{name: "built", wantState: forge.Passed, kept: true},
		{name: "a step fails", err: errors.New("exit status 1"), wantState: forge.Failed, kept: true},
		{name: "the worker is lost", err: current.Infra(current.FailWorkerLost, errors.New("worker w1 vanished")), wantState: forge.Error},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := strings.Replace(validConfig(t, dir), "https://example.org/web.git", repo.Dir, 1)
			cfg = strings.Replace(cfg, "image: ocaml/web", "image: ocaml/web\n    spec: deploy.spec\n    archs: [amd64, arm64]", 1)
			file := filepath.Join(dir, "deployer.yaml")
			os.WriteFile(file, []byte(cfg), 0o600)
			d, err := New(Options{ConfigFile: file, StateDir: filepath.Join(dir, "state"), Register: prometheus.NewRegistry(),
				Logger: slog.New(slog.DiscardHandler), Specs: fakeSpecs{err: tc.err}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c := d.config()
			b := d.build(t.Context(), c, &c.Services[0], "refs/heads/main", commit)
			if b.State != tc.wantState {
				t.Errorf("build %s (%s), want %s", b.State, b.Message, tc.wantState)
			}
			if kept := d.st.build("web", commit) != nil; kept != tc.kept {
				t.Errorf("build kept %v, want %v", kept, tc.kept)
			}
			if tc.err == nil && (b.Snapshots["amd64"] != "snapshot-of-linux-x86_64" || b.Snapshots["arm64"] != "snapshot-of-linux-arm64") {
				t.Errorf("snapshots %v: want each architecture's from its pool", b.Snapshots)
			}
		})
	}
}

// BenchmarkStepJob measures what running a step as an engine job adds: the step does
// nothing, so an op is the engine's pass, the job's start and its record.
func BenchmarkStepJob(b *testing.B) {
	dir := b.TempDir()
	file := filepath.Join(dir, "deployer.yaml")
	os.WriteFile(file, []byte(validConfig(b, dir)), 0o600)
	d, err := New(Options{ConfigFile: file, StateDir: filepath.Join(dir, "state"), Register: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), Jobs: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Close)
	startEngine(b, d, dir)
	for b.Loop() {
		if _, err := d.inJob(b.Context(), OpDeploy, "web", "nothing", func(context.Context, io.Writer) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
