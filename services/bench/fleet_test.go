package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// cannedFleet runs every job at once to the outcome given, its log being log.
type cannedFleet struct {
	outcome cluster.Outcome
	log     string
}

func (f *cannedFleet) PutSource(context.Context, string) (string, error) { return "src", nil }
func (f *cannedFleet) Submit(_ context.Context, r cluster.Request) (*cluster.Job, error) {
	return &cluster.Job{Request: cluster.Request{ID: "fleet-1", Pool: r.Pool}, State: cluster.StateRunning, Worker: "slot"}, nil
}
func (f *cannedFleet) Log(_ context.Context, _ string, _ int64, _ bool, w io.Writer) (int64, error) {
	n, err := io.WriteString(w, f.log)
	return int64(n), err
}
func (f *cannedFleet) Wait(context.Context, string) (*cluster.Job, error) {
	return &cluster.Job{Request: cluster.Request{ID: "fleet-1"}, State: cluster.StateDone, Worker: "slot",
		Result: &cluster.Result{Outcome: f.outcome, Message: "exit status 1", Worker: "slot", Attempts: 1}}, nil
}
func (f *cannedFleet) WaitStarted(context.Context, string) (*cluster.Job, error) {
	return &cluster.Job{Request: cluster.Request{ID: "fleet-1"}, State: cluster.StateRunning}, nil
}
func (f *cannedFleet) Cancel(context.Context, string) error { return nil }
func (f *cannedFleet) Notify(context.Context, string, func(*cluster.Job) bool, func()) (func(), error) {
	return nil, errors.New("no notifications")
}

// TestFleetPartialResults: the metrics a fleet job printed are kept, also when the job
// failed after printing them.
func TestFleetPartialResults(t *testing.T) {
	result := func(v string) string {
		return `{"name": "s", "results": [{"name": "t", "metrics": [{"name": "m", "value": ` + v + `}]}]}` + "\n"
	}
	log := machineMarker + "cpu=Test CPU\n" + armMarker + "1/2: base\n" + result("10") + armMarker + "1/2: head\n" + result("12") +
		armMarker + "2/2: base\n" + result("11")
	cases := []struct {
		name    string
		outcome cluster.Outcome
		log     string
		wantErr bool
	}{
		{"passed", cluster.OutcomeOK, log + armMarker + "2/2: head\n" + result("13"), false},
		{"failed in the last run", cluster.OutcomeFailed, log + armMarker + "2/2: head\nkiln-bench: head failed in repeat 2\n", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := FleetRunner{Fleet: &cannedFleet{outcome: c.outcome, log: c.log}, Image: "debian"}
			var o Outcome
			var jobLog string
			inJob(t, func(ctx context.Context, e *current.Engine, j *current.Job) {
				j.Logf("lines of the job before the fleet job's\nsecond line")
				o = f.RunJob(ctx, j, "bench", false, Job{Dir: t.TempDir(), BaseDir: t.TempDir(), Command: "true", Repeats: 2, Timeout: time.Minute})
				run := store.Run{}
				if err := (&Pipeline{Fleet: &f, Logs: e}).placeLog(j, &run, o, 0); err != nil {
					t.Error(err)
				}
				o.Log = run.Log
				ch, err := e.ReadLog(j.ID(), 0, 1<<20)
				if err != nil {
					t.Error(err)
				}
				jobLog = string(ch.Data)
			})
			checkLogPlaces(t, jobLog, o, [3]string{"s", "t", "m"})
			if (o.Err != nil) != c.wantErr {
				t.Errorf("error %v, want one: %v", o.Err, c.wantErr)
			}
			base, _ := o.Base.Find("s", "t", "m")
			head, _ := o.Head.Find("s", "t", "m")
			wantHead := "[12]"
			if !c.wantErr {
				wantHead = "[12 13]"
			}
			if got := fmtSamples(base) + " " + fmtSamples(head); got != "[10 11] "+wantHead {
				t.Errorf("base and head %s, want [10 11] %s", got, wantHead)
			}
			if o.Machine.CPU != "Test CPU" || o.Machine.Worker != "slot" {
				t.Errorf("machine %+v, want the CPU printed and the worker", o.Machine)
			}
		})
	}
}

func fmtSamples(m benchfmt.Metric) string { return fmt.Sprint(m.Value.Samples) }

// inJob runs f in an engine job and waits for it.
func inJob(t *testing.T, f func(ctx context.Context, e *current.Engine, j *current.Job)) {
	t.Helper()
	eng, err := current.Open(current.Config{StateDir: filepath.Join(t.TempDir(), "engine"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ran := make(chan struct{})
	op := &current.Op[string, int]{Name: "bench-test", Run: func(ctx context.Context, j *current.Job, _ string) (int, error) {
		defer close(ran)
		f(ctx, eng, j)
		return 0, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, current.Catch(current.Do(op, current.Return(t.Name())))) }()
	defer func() { cancel(); <-done }()
	select {
	case <-ran:
	case <-time.After(5 * time.Minute):
		t.Fatal("the engine job did not run")
	}
}

// hostFleet runs each job submitted at once on this host: command in the uploaded
// head/ and base/ trees, alternately, printed with the sandbox's arm markers.
type hostFleet struct {
	cannedFleet
	command string
	repeats int

	mu      sync.Mutex
	sources map[string]string // source id → dir
	logs    map[string]string // job id → its log
	jobs    int
}

func (f *hostFleet) PutSource(_ context.Context, dir string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sources == nil {
		f.sources, f.logs = map[string]string{}, map[string]string{}
	}
	id := fmt.Sprintf("src-%d", len(f.sources))
	f.sources[id] = dir
	return id, nil
}

func (f *hostFleet) Submit(ctx context.Context, r cluster.Request) (*cluster.Job, error) {
	f.mu.Lock()
	dir := f.sources[r.Source]
	_, seen := f.logs[r.ID]
	f.mu.Unlock()
	if !seen {
		var log strings.Builder
		for i := 1; i <= f.repeats; i++ {
			for _, arm := range []string{"base", "head"} {
				fmt.Fprintf(&log, "%s%d/%d: %s\n", armMarker, i, f.repeats, arm)
				cmd := exec.CommandContext(ctx, "sh", "-c", f.command)
				cmd.Dir = filepath.Join(dir, arm)
				out, err := cmd.CombinedOutput()
				if err != nil {
					return nil, fmt.Errorf("%s in %s: %v: %s", f.command, cmd.Dir, err, out)
				}
				log.Write(out)
			}
		}
		f.mu.Lock()
		f.logs[r.ID] = log.String()
		f.jobs++
		f.mu.Unlock()
	}
	return &cluster.Job{Request: r, State: cluster.StateRunning, Worker: "slot"}, nil
}

func (f *hostFleet) Log(_ context.Context, id string, _ int64, _ bool, w io.Writer) (int64, error) {
	f.mu.Lock()
	log := f.logs[id]
	f.mu.Unlock()
	n, err := io.WriteString(w, log)
	return int64(n), err
}
