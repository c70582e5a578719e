package opamrepoci

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	repo := forge.RepoID{Forge: "gitea", Owner: "o", Name: "r"}
	pr1 := PR{Repo: repo, Ref: "refs/pull/1/head", Number: 1}
	pr2 := PR{Repo: repo, Ref: "refs/pull/2/head", Number: 2}
	failedNew := Outcome{State: forge.Failed, Verdict: NewFailure}
	m.setPR(Report{PR: pr1, Plan: &Plan{}, Outcomes: []Outcome{failedNew, {State: forge.Passed}, {State: forge.Passed}}})
	m.setPR(Report{PR: pr2, Plan: &Plan{}, Outcomes: []Outcome{{State: forge.Running}}})
	for _, tc := range []struct {
		name, metric, labels string
		want                 float64
	}{
		{"failed pull requests", "kiln_opamrepoci_pull_requests", "state=failed", 1},
		{"running pull requests", "kiln_opamrepoci_pull_requests", "state=running", 1},
		{"passed jobs of #1", "kiln_opamrepoci_pull_request_jobs", "pr=1,repo=gitea/o/r,status=passed", 2},
		{"own failures of #1", "kiln_opamrepoci_pull_request_jobs", "pr=1,repo=gitea/o/r,status=failed", 1},
		{"pending jobs of #2", "kiln_opamrepoci_pull_request_jobs", "pr=2,repo=gitea/o/r,status=pending", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testenv.Metrics(t, reg)[tc.metric+"{"+tc.labels+"}"]; got != tc.want {
				t.Errorf("%s{%s} = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
	m.keepPRs([]PR{pr2})
	t.Run("a pull request no longer followed leaves", func(t *testing.T) {
		g := testenv.Metrics(t, reg)
		if got := g["kiln_opamrepoci_pull_requests{state=failed}"]; got != 0 {
			t.Errorf("failed pull requests = %v, want 0", got)
		}
		for k := range g {
			if strings.Contains(k, "pr=1,") {
				t.Errorf("%s is still there", k)
			}
		}
	})
}
