package opamrepoci

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/forge"
)

// Metrics are the service's Prometheus metrics: kiln_opamrepoci_pull_requests (the
// pull requests followed, by the state of their opam-ci status) and
// kiln_opamrepoci_pull_request_jobs (each pull request's jobs by status: passed,
// failed — its own —, on_base, accepted, errored, pending, cancelled, skipped).
type Metrics struct {
	prs  *prometheus.GaugeVec
	jobs *prometheus.GaugeVec

	mu     sync.Mutex
	states map[string]forge.State // PR key → state
	labels map[string][2]string   // PR key → repo, number
}

// NewMetrics registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		prs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_opamrepoci_pull_requests",
			Help: "Pull requests followed by opam-repo-ci, by the state of their opam-ci status."}, []string{"state"}),
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_opamrepoci_pull_request_jobs",
			Help: "Jobs of each pull request followed by opam-repo-ci, by status."}, []string{"repo", "pr", "status"}),
		states: map[string]forge.State{},
		labels: map[string][2]string{},
	}
	if reg != nil {
		reg.MustRegister(m.prs, m.jobs)
	}
	return m
}

// prLabels are a pull request's labels (its number, or its branch on plain git).
func prLabels(p PR) [2]string {
	n := p.Ref
	if p.Number > 0 {
		n = strconv.Itoa(p.Number)
	}
	return [2]string{p.Repo.String(), n}
}

// setPR records a pull request's report.
func (m *Metrics) setPR(r Report) {
	st, _ := r.Status()
	c := r.Counts()
	l := prLabels(r.PR)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[r.PR.key()] = st.State
	m.labels[r.PR.key()] = l
	for status, n := range map[string]int{"passed": c.Passed, "failed": c.Failed, "on_base": c.OnBase, "accepted": c.Accepted,
		"errored": c.Errored, "pending": c.Pending, "cancelled": c.Cancelled, "skipped": c.Skipped} {
		m.jobs.WithLabelValues(l[0], l[1], status).Set(float64(n))
	}
	m.tally()
}

// keepPRs forgets the pull requests no longer followed.
func (m *Metrics) keepPRs(prs []PR) {
	live := map[string]bool{}
	for _, p := range prs {
		live[p.key()] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, l := range m.labels {
		if !live[k] {
			m.jobs.DeletePartialMatch(prometheus.Labels{"repo": l[0], "pr": l[1]})
			delete(m.labels, k)
			delete(m.states, k)
		}
	}
	m.tally()
}

func (m *Metrics) tally() {
	counts := map[forge.State]int{}
	for _, st := range m.states {
		counts[st]++
	}
	for _, st := range []forge.State{forge.Queued, forge.Running, forge.Passed, forge.Failed, forge.Error, forge.Cancelled} {
		m.prs.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
}
