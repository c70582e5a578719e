package baseimages

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
)

// TestFleetRunner builds a spec on a fleet pool through an engine job and reads the
// result from the local worker's builder store, as the service does; a snapshot
// the store does not have is an infrastructure failure naming the store.
func TestFleetRunner(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "mmdebstrap")
	base := imagetest.Debian(t)
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(state, "builder"), Images: imagetest.Store(t).Root()})
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(state, "fleet"), Listen: "127.0.0.1:0", Pools: []string{"linux-x86_64"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: fleet.URL, Name: "w"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w", Pool: "linux-x86_64", Capacity: 1,
		StateDir: filepath.Join(state, "worker"), Runner: runner, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })

	store, err := snapshot.Open(filepath.Join(state, "builder", "store"), "")
	if err != nil {
		t.Fatal(err)
	}
	fr := FleetRunner{Fleet: fleet.Client, Store: store}
	contextDir := t.TempDir()
	os.WriteFile(filepath.Join(contextDir, "hello"), []byte("from the context\n"), 0o644)
	s := &spec.Spec{From: base.Ref, Ops: []spec.Op{spec.Copy{Src: []string{"hello"}, Dst: "/hello"}, spec.Run{Shell: "echo built > /built"}}}
	type result struct{ Hello, Built string }
	op := &current.Op[string, result]{Name: "fleet-runner-test", Pool: fleetjob.Pool, Run: func(ctx context.Context, j *current.Job, _ string) (result, error) {
		id, err := fr.Build(ctx, j, "linux-x86_64", s, contextDir)
		if err != nil {
			return result{}, err
		}
		dir, release, err := fr.Mount(id)
		if err != nil {
			return result{}, err
		}
		defer release()
		h, _ := os.ReadFile(filepath.Join(dir, "hello"))
		b, _ := os.ReadFile(filepath.Join(dir, "built"))
		return result{string(h), string(b)}, nil
	}}
	e, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Pools: fleetjob.EnginePools()})
	if err != nil {
		t.Fatal(err)
	}
	out := current.Observe(current.Do(op, current.Return("x")))
	final := make(chan current.Observed[result], 1)
	sink := current.Map(out, func(o current.Observed[result]) current.Unit {
		if o.State == current.StateOk || o.State == current.StateFailed {
			select {
			case final <- o:
			default:
			}
		}
		return current.Unit{}
	})
	runDone := make(chan struct{})
	go func() { defer close(runDone); e.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-runDone; e.Close() })
	select {
	case got := <-final:
		if got.Value.Hello != "from the context\n" || got.Value.Built != "built\n" {
			t.Fatalf("read from the worker's snapshot: %+v", got)
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("no result after 5 minutes: jobs %+v", e.Jobs())
	}
	if _, _, err := fr.Mount("0123456789abcdef"); err == nil || current.KindOf(err) != current.FailWorkerLost {
		t.Errorf("mount of a snapshot built elsewhere: %v", err)
	}
}
