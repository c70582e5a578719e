package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-ci/kiln/cluster"
)

// Fleet is the build fleet as the console shows and administers it; *cluster.Client
// satisfies it.
type Fleet interface {
	Pools(ctx context.Context) ([]cluster.PoolInfo, error)
	Workers(ctx context.Context) ([]cluster.WorkerInfo, error)
	Queue(ctx context.Context, pool string, limit int) (*cluster.QueueInfo, error)
	Pause(ctx context.Context, worker string) error
	Unpause(ctx context.Context, worker string) error
}

var _ Fleet = (*cluster.Client)(nil)

// clusterFleet is a Fleet that can say how NATS keeps it: which scheduler leads, and
// each stream's leader node and followers.
type clusterFleet interface {
	ClusterInfo(ctx context.Context) (*cluster.ClusterInfo, error)
}

var _ clusterFleet = (*cluster.Client)(nil)

// defaultQueueLimit and maxQueueLimit bound how many queued jobs of each pool /fleet lists.
const (
	defaultQueueLimit = 100
	maxQueueLimit     = 10000
)

// fleetView is what /fleet shows and /api/fleet answers.
type fleetView struct {
	Attached bool                 `json:"attached"`
	Pool     string               `json:"pool,omitempty"` // the one pool asked for, if any
	Limit    int                  `json:"limit"`
	Pools    []cluster.PoolInfo   `json:"pools"`
	Workers  []cluster.WorkerInfo `json:"workers"`
	Queues   []cluster.QueueInfo  `json:"queues"`
	// Cluster is the scheduler leader and the streams' replication, as kiln admin cluster shows them.
	Cluster      *cluster.ClusterInfo `json:"cluster,omitempty"`
	ClusterError string               `json:"cluster_error,omitempty"`
}

// fleetErr turns a failure to reach the fleet into a 502 naming what was asked.
func fleetErr(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return httpErr(http.StatusBadGateway, "fleet: %s: %v", what, err)
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r, "pool", "limit"); err != nil {
		return err
	}
	q := r.URL.Query()
	v := fleetView{Limit: defaultQueueLimit, Pool: q.Get("pool"),
		Pools: []cluster.PoolInfo{}, Workers: []cluster.WorkerInfo{}, Queues: []cluster.QueueInfo{}}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxQueueLimit {
			return httpErr(http.StatusBadRequest, "bad query parameter limit=%q: want a number from 1 to %d", l, maxQueueLimit)
		}
		v.Limit = n
	}
	if s.fleet != nil {
		v.Attached = true
		ctx := r.Context()
		pools, err := s.fleet.Pools(ctx)
		if err != nil {
			return fleetErr("list pools", err)
		}
		if v.Pool != "" {
			i := slices.IndexFunc(pools, func(p cluster.PoolInfo) bool { return p.Name == v.Pool })
			if i < 0 {
				return httpErr(http.StatusNotFound, "no pool %q", v.Pool)
			}
			pools = pools[i : i+1]
		}
		workers, err := s.fleet.Workers(ctx)
		if err != nil {
			return fleetErr("list workers", err)
		}
		if v.Pool != "" {
			workers = slices.DeleteFunc(workers, func(w cluster.WorkerInfo) bool { return w.Pool != v.Pool })
		}
		for i := range workers {
			workers[i].Running = nonNil(workers[i].Running)
		}
		v.Pools, v.Workers = nonNil(pools), nonNil(workers)
		for _, p := range pools {
			qi, err := s.fleet.Queue(ctx, p.Name, v.Limit)
			if err != nil {
				return fleetErr("queue of pool "+p.Name, err)
			}
			qi.Running, qi.Queued = nonNil(qi.Running), nonNil(qi.Queued)
			v.Queues = append(v.Queues, *qi)
		}
		if cf, ok := s.fleet.(clusterFleet); ok {
			// The pools and queues are worth showing when the cluster's state cannot be read.
			if ci, err := cf.ClusterInfo(ctx); err != nil {
				v.ClusterError = err.Error()
			} else {
				v.Cluster = ci
			}
		}
	}
	if c.api {
		return writeJSON(w, http.StatusOK, v)
	}
	return s.render(w, c, "fleet", "Fleet", v)
}

// workerAction pauses or unpauses the worker named in the path.
func (s *Server) workerAction(action string) handler {
	return func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
		if s.fleet == nil {
			return httpErr(http.StatusNotFound, "no fleet is attached to this console")
		}
		name := r.PathValue("name")
		find := func() (*cluster.WorkerInfo, error) {
			ws, err := s.fleet.Workers(r.Context())
			if err != nil {
				return nil, fleetErr("list workers", err)
			}
			for i := range ws {
				if ws[i].Name == name {
					return &ws[i], nil
				}
			}
			return nil, httpErr(http.StatusNotFound, "no worker %q", name)
		}
		if _, err := find(); err != nil {
			return err
		}
		var err error
		switch action {
		case "pause":
			err = s.fleet.Pause(r.Context(), name)
		case "unpause":
			err = s.fleet.Unpause(r.Context(), name)
		}
		if err != nil {
			return fleetErr(fmt.Sprintf("%s worker %s", action, name), err)
		}
		s.log.Info("worker action", "action", action, "worker", name, "by", c.id.User)
		if c.api {
			wi, err := find()
			if err != nil {
				return err
			}
			wi.Running = nonNil(wi.Running)
			return writeJSON(w, http.StatusOK, map[string]any{"worker": wi})
		}
		http.Redirect(w, r, "/fleet#worker-"+url.PathEscape(name), http.StatusSeeOther)
		return nil
	}
}

// Percent shows a share (0 to 1) as a percentage.
func (fleetView) Percent(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

// Ago shows how long before now t was, to the second.
func (fleetView) Ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// In shows how long after now t is, or "now" when it is not in the future.
func (fleetView) In(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	d := time.Until(t).Round(time.Second)
	if d <= 0 {
		return "now"
	}
	return "in " + d.String()
}

// Clustered reports whether the fleet's streams are replicated on a NATS cluster.
func (v fleetView) Clustered() bool {
	return v.Cluster != nil && slices.ContainsFunc(v.Cluster.Streams, func(s cluster.StreamInfo) bool { return len(s.Replicas) > 0 })
}

// Since shows a duration to the millisecond.
func (fleetView) Since(d time.Duration) string { return d.Round(time.Millisecond).String() + " ago" }
