package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// bucketLeader holds the scheduler leader lease: key keyLeader, whose value names the leader.
const (
	bucketLeader = "KILN_FLEET_LEADER"
	keyLeader    = "scheduler"
)

type leaderMetrics struct {
	leader      prometheus.Gauge
	changes     prometheus.Counter
	renewFailed prometheus.Counter
}

func newLeaderMetrics(reg prometheus.Registerer) *leaderMetrics {
	m := &leaderMetrics{
		leader:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_cluster_scheduler_leader", Help: "1 while this scheduler holds the leader lease, else 0."}),
		changes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_cluster_scheduler_leader_changes_total", Help: "Times this scheduler took or gave up the lead."}),
		renewFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_cluster_scheduler_lease_renewals_failed_total", Help: "Leader lease renewals that failed."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.leader, m.changes, m.renewFailed} {
			_ = reg.Register(c)
		}
	}
	return m
}

// HAScheduler is one of several schedulers of a fleet: it runs a Scheduler while it holds
// the leader lease (a key in the JetStream bucket KILN_FLEET_LEADER, created and renewed
// with revision checks, that lapses after SchedulerOptions.LeaderLease) and stands by
// otherwise.
type HAScheduler struct {
	opts   SchedulerOptions
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue // nil until the bucket is made
	log    *slog.Logger
	m      *leaderMetrics
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	current *Scheduler // non-nil while leading
}

// LeaderInfo says which scheduler holds the lead.
type LeaderInfo struct {
	ID       string    `json:"id"`
	Revision uint64    `json:"revision"`
	Renewed  time.Time `json:"renewed"`
}

func leaderBucket(ctx context.Context, js jetstream.JetStream, lease time.Duration, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketLeader, History: 1, TTL: lease, Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucketLeader, err)
	}
	return kv, nil
}

// CurrentLeader reads the leader lease; ok is false when no scheduler leads.
func CurrentLeader(ctx context.Context, nc *nats.Conn) (info LeaderInfo, ok bool, err error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return info, false, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := js.KeyValue(ctx, bucketLeader)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return info, false, nil
	} else if err != nil {
		return info, false, fmt.Errorf("bucket %s: %w", bucketLeader, err)
	}
	e, err := kv.Get(ctx, keyLeader)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return info, false, nil
	} else if err != nil {
		return info, false, fmt.Errorf("read leader lease: %w", err)
	}
	return LeaderInfo{ID: string(e.Value()), Revision: e.Revision(), Renewed: e.Created()}, true, nil
}

// StartHA starts a scheduler that leads while it holds the lease and stands by otherwise,
// until ctx ends or Stop is called.
func StartHA(ctx context.Context, nc *nats.Conn, opts SchedulerOptions) (*HAScheduler, error) {
	opts.fill()
	if opts.ID == "" {
		host, _ := os.Hostname()
		opts.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID()[:6])
	}
	opts.metrics = newSchedMetrics(opts.Registry)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if opts.Registry != nil {
		_ = opts.Registry.Register(newReplicationCollector(nc, js))
	}
	rctx, cancel := context.WithCancel(ctx)
	h := &HAScheduler{opts: opts, nc: nc, js: js, log: opts.Logger.With("part", "scheduler", "id", opts.ID), m: newLeaderMetrics(opts.Registry), cancel: cancel, done: make(chan struct{})}
	go h.run(rctx)
	return h, nil
}

// ID is the name this scheduler leads under.
func (h *HAScheduler) ID() string { return h.opts.ID }

// Leading says whether this scheduler holds the lead now.
func (h *HAScheduler) Leading() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current != nil
}

// Stop steps down (releasing the lease, so a standby takes over at once) and stops.
func (h *HAScheduler) Stop() {
	h.cancel()
	<-h.done
}

func (h *HAScheduler) run(ctx context.Context) {
	defer close(h.done)
	lease := h.opts.LeaderLease
	every := lease / 4
	var rev uint64
	var deadline time.Time // the lead must end before this unless renewed
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if h.Leading() {
				h.stepDown("stopped")
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if err := h.kv.Delete(dctx, keyLeader, jetstream.LastRevision(rev)); err != nil {
					h.log.Warn("leader lease not released; a standby takes over when it lapses", "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
		}
		if h.kv == nil {
			// schedulers starting together may race to make the bucket: try again
			kv, err := leaderBucket(ctx, h.js, lease, h.opts.Replicas)
			if err != nil {
				if ctx.Err() == nil {
					h.log.Warn("leader lease bucket not ready; retrying", "err", err)
				}
				t.Reset(every)
				continue
			}
			h.kv = kv
		}
		sent := time.Now()
		if !h.Leading() {
			r, err := h.kv.Create(ctx, keyLeader, []byte(h.opts.ID))
			if err == nil {
				rev, deadline = r, sent.Add(lease-every)
				if err := h.lead(ctx); err != nil {
					h.log.Error("scheduler could not start; lease given back", "err", err)
					_ = h.kv.Delete(ctx, keyLeader, jetstream.LastRevision(rev))
				}
			} else if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				h.log.Warn("leader lease unreadable", "err", err)
			}
			t.Reset(every)
			continue
		}
		r, err := h.kv.Update(ctx, keyLeader, []byte(h.opts.ID), rev)
		switch {
		case err == nil:
			rev, deadline = r, sent.Add(lease-every)
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
			h.m.renewFailed.Inc()
			h.stepDown("the lease was taken or lapsed")
		default:
			h.m.renewFailed.Inc()
			if time.Now().After(deadline) {
				h.stepDown(fmt.Sprintf("lease not renewed in time: %v", err))
			} else {
				h.log.Warn("leader lease renewal failed; retrying", "err", err)
			}
		}
		t.Reset(min(every, max(time.Until(deadline), 10*time.Millisecond)))
	}
}

// lead starts the scheduler, which resumes from the state in JetStream.
func (h *HAScheduler) lead(ctx context.Context) error {
	start := time.Now()
	s, err := StartScheduler(ctx, h.nc, h.opts)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.current = s
	h.mu.Unlock()
	h.m.leader.Set(1)
	h.m.changes.Inc()
	h.log.Info("scheduler leads", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// stepDown stops the scheduler; its state is stored before Stop returns.
func (h *HAScheduler) stepDown(why string) {
	h.mu.Lock()
	s := h.current
	h.current = nil
	h.mu.Unlock()
	if s == nil {
		return
	}
	s.Stop()
	h.m.leader.Set(0)
	h.m.changes.Inc()
	h.log.Warn("scheduler stands by", "reason", why)
}

// ClusterInfo is how the fleet's state is kept on a NATS cluster: which scheduler leads and,
// per stream, which node leads it and how far each replica lags.
type ClusterInfo struct {
	Scheduler *LeaderInfo  `json:"scheduler,omitempty"` // nil when no scheduler leads
	Streams   []StreamInfo `json:"streams"`
}

// StreamInfo is one of the fleet's streams on the cluster.
type StreamInfo struct {
	Name     string        `json:"name"`
	Cluster  string        `json:"cluster,omitempty"`
	Leader   string        `json:"leader,omitempty"`
	Replicas []ReplicaInfo `json:"replicas,omitempty"` // the followers
	Messages uint64        `json:"messages"`
}

// ReplicaInfo is a follower of a stream: Lag is how many operations it is behind the leader.
type ReplicaInfo struct {
	Node    string        `json:"node"`
	Current bool          `json:"current"`
	Offline bool          `json:"offline,omitempty"`
	Lag     uint64        `json:"lag"`
	Active  time.Duration `json:"active"` // since it was last heard from
}

// State is the follower's state as shown to people: "current", "catching up" or "offline".
func (r ReplicaInfo) State() string {
	switch {
	case r.Offline:
		return "offline"
	case !r.Current:
		return "catching up"
	}
	return "current"
}

// ClusterInfo reports the scheduler leader and the replication of the fleet's streams.
func (c *Client) ClusterInfo(ctx context.Context) (*ClusterInfo, error) {
	return clusterInfo(ctx, c.nc, c.js)
}

func clusterInfo(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) (*ClusterInfo, error) {
	out := &ClusterInfo{}
	info, ok, err := CurrentLeader(ctx, nc)
	if err != nil {
		return nil, err
	}
	if ok {
		out.Scheduler = &info
	}
	for _, name := range append(slices.Sorted(maps.Keys(fleetStreams)), "KV_"+bucketLeader) {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		si := st.CachedInfo()
		s := StreamInfo{Name: name, Messages: si.State.Msgs}
		if cl := si.Cluster; cl != nil {
			s.Cluster, s.Leader = cl.Name, cl.Leader
			for _, p := range cl.Replicas {
				s.Replicas = append(s.Replicas, ReplicaInfo{Node: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, Active: p.Active})
			}
		}
		out.Streams = append(out.Streams, s)
	}
	return out, nil
}

// replicationCollector reports, at each scrape, the replication of the fleet's streams
// as the cluster tells it.
type replicationCollector struct {
	nc               *nats.Conn
	js               jetstream.JetStream
	lag, current, ld *prometheus.Desc
}

func newReplicationCollector(nc *nats.Conn, js jetstream.JetStream) *replicationCollector {
	labels := []string{"stream", "node"}
	return &replicationCollector{nc: nc, js: js,
		lag:     prometheus.NewDesc("kiln_cluster_stream_replica_lag_operations", "Operations a follower of a fleet stream is behind its leader.", labels, nil),
		current: prometheus.NewDesc("kiln_cluster_stream_replica_current", "1 when a follower of a fleet stream is current, else 0.", labels, nil),
		ld:      prometheus.NewDesc("kiln_cluster_stream_leader", "1 for the node that leads a fleet stream.", labels, nil),
	}
}

func (r *replicationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.lag
	ch <- r.current
	ch <- r.ld
}

func (r *replicationCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ci, err := clusterInfo(ctx, r.nc, r.js)
	if err != nil {
		return
	}
	for _, s := range ci.Streams {
		if s.Leader != "" {
			ch <- prometheus.MustNewConstMetric(r.ld, prometheus.GaugeValue, 1, s.Name, s.Leader)
		}
		for _, p := range s.Replicas {
			cur := 0.0
			if p.Current && !p.Offline {
				cur = 1
			}
			ch <- prometheus.MustNewConstMetric(r.lag, prometheus.GaugeValue, float64(p.Lag), s.Name, p.Node)
			ch <- prometheus.MustNewConstMetric(r.current, prometheus.GaugeValue, cur, s.Name, p.Node)
		}
	}
}
