package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

// TestHuntFirstBadCommit: main's runs of c0…c4 and then c10 show a 30 % slower time;
// the commits between were never benchmarked. The hunt bisects c4..c10 with
// interleaved runs, names c7 (the first commit that made it slower) and posts the
// alert to a JSON webhook.
func TestHuntFirstBadCommit(t *testing.T) {
	testenv.RequireCommand(t, "git", "sh", "od")
	for _, tc := range []struct {
		name  string
		fleet bool // the probes run on a fleet pool
	}{
		{name: "on this host"},
		{name: "on the fleet", fleet: true},
	} {
		t.Run(tc.name, func(t *testing.T) { huntFirstBadCommit(t, tc.fleet) })
	}
}

func huntFirstBadCommit(t *testing.T, fleet bool) {
	ctx := context.Background()
	work := gittest.NewRepo(t)
	var commits []string
	for i := range 11 {
		// c5 and c6 are 1 % slower, a small change the probes can tell but that is
		// not the 30 % regression of c7 the hunt is after.
		speed := "100"
		switch {
		case i >= 7:
			speed = "130"
		case i >= 5:
			speed = "101"
		}
		commits = append(commits, work.Commit(fmt.Sprintf("c%d", i), map[string]string{"speed": speed, "bench.sh": benchScript, "n": fmt.Sprint(i)}))
	}

	got := make(chan notify.Message, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m notify.Message
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &m); err == nil {
			got <- m
		}
	}))
	defer hook.Close()
	urlFile := filepath.Join(t.TempDir(), "hook")
	os.WriteFile(urlFile, []byte(hook.URL), 0o600)
	n, err := notify.New(notify.Options{Webhooks: []notify.Webhook{{Name: "bench", Kind: notify.JSON, URLFile: urlFile}}, Logger: quiet, Register: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)

	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	job := Job{Command: "sh bench.sh", Repeats: 5, Timeout: time.Minute}
	hunt := &Hunt{Store: st, GitDir: work.Dir, Job: job, Alert: n, BaseURL: "http://ci.test", Logger: quiet}
	var found *Found
	api, err := NewAPI(API{Store: st, Logger: quiet, OnJudged: func(ctx context.Context, c Comparison) {
		f, err := hunt.OnBranch(ctx, c)
		if err != nil {
			t.Errorf("hunt: %v", err)
		}
		if f != nil {
			found = f
		}
	}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	record := func(ctx context.Context) {
		for _, i := range []int{0, 1, 2, 3, 4, 10} {
			dir := t.TempDir()
			work.Git("worktree", "add", "-q", "--detach", filepath.Join(dir, "src"), commits[i])
			j := job
			j.Dir = filepath.Join(dir, "src")
			o := Run(ctx, j, nil)
			if o.Err != nil {
				t.Error(o.Err)
				return
			}
			if _, err := api.Record(ctx, store.Run{Repo: "git/local/lib", Branch: "main", Commit: commits[i], CommitTime: t0.Add(time.Duration(i) * time.Hour)}, o); err != nil {
				t.Error(err)
				return
			}
		}
	}
	if !fleet {
		record(ctx)
	} else {
		// The runs are recorded, and the regression hunted, by an engine job whose
		// probes are fleet jobs.
		hf := &hostFleet{cannedFleet: cannedFleet{outcome: cluster.OutcomeOK}, command: job.Command, repeats: job.Repeats}
		inJob(t, func(ctx context.Context, _ *current.Engine, j *current.Job) {
			hunt.Runner = &fleetProbes{f: FleetRunner{Fleet: hf, Image: "debian"}, j: j, pool: "bench"}
			record(ctx)
		})
		if hf.jobs == 0 || hf.jobs != len(found.Probed) {
			t.Errorf("%d fleet jobs for %d probes", hf.jobs, len(found.Probed))
		}
	}
	t.Run("first bad commit", func(t *testing.T) {
		if found == nil {
			t.Fatal("no regression hunted")
		}
		if found.FirstBad != commits[7] || found.LastGood != commits[6] {
			t.Errorf("first bad %.8s after %.8s, want c7 %.8s", found.FirstBad, found.LastGood, commits[7])
		}
		if len(found.Metrics) != 1 || !strings.HasPrefix(found.Metrics[0], "suite/sort/time +") {
			t.Errorf("regressed metrics %v, want the time only", found.Metrics)
		}
		if len(found.Probed) > 3 {
			t.Errorf("%d probes for 6 commits", len(found.Probed))
		}
	})
	t.Run("alert on the webhook", func(t *testing.T) {
		select {
		case m := <-got:
			var first string
			for _, f := range m.Fields {
				if f.Name == "first bad commit" {
					first = f.Value
				}
			}
			if first != commits[7] || !strings.Contains(m.Text, "suite/sort/time") {
				t.Errorf("alert %+v", m)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no alert posted")
		}
	})
}
