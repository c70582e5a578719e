package web

import (
	"context"
	"errors"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
)

// clusterOnlyFleet is a fleet with no pools whose cluster state is ci (or err).
type clusterOnlyFleet struct {
	ci  *cluster.ClusterInfo
	err error
}

func (clusterOnlyFleet) Pools(context.Context) ([]cluster.PoolInfo, error)     { return nil, nil }
func (clusterOnlyFleet) Workers(context.Context) ([]cluster.WorkerInfo, error) { return nil, nil }
func (clusterOnlyFleet) Queue(_ context.Context, pool string, _ int) (*cluster.QueueInfo, error) {
	return &cluster.QueueInfo{Pool: pool}, nil
}
func (clusterOnlyFleet) Pause(context.Context, string) error   { return nil }
func (clusterOnlyFleet) Unpause(context.Context, string) error { return nil }
func (f clusterOnlyFleet) ClusterInfo(context.Context) (*cluster.ClusterInfo, error) {
	return f.ci, f.err
}

func TestFleetPageCluster(t *testing.T) {
	renewed := time.Now().Add(-time.Second)
	three := func(sched *cluster.LeaderInfo) *cluster.ClusterInfo {
		return &cluster.ClusterInfo{Scheduler: sched, Streams: []cluster.StreamInfo{
			{Name: "KV_KILN_FLEET_JOBS", Cluster: "kiln", Leader: "n1", Messages: 48, Replicas: []cluster.ReplicaInfo{
				{Node: "n2", Current: true, Active: 120 * time.Millisecond},
				{Node: "n3", Offline: true, Lag: 17, Active: 9 * time.Second},
			}},
			{Name: "KILN_FLEET_LOGS", Cluster: "kiln", Leader: "n2", Messages: 384, Replicas: []cluster.ReplicaInfo{
				{Node: "n1", Current: false, Lag: 5, Active: time.Second},
			}},
		}}
	}
	for _, tc := range []struct {
		name  string
		fleet clusterOnlyFleet
		want  []string // in the page's text
	}{
		{"embedded single node", clusterOnlyFleet{ci: &cluster.ClusterInfo{Streams: []cluster.StreamInfo{{Name: "KV_KILN_FLEET_JOBS", Leader: "NABC", Messages: 3}}}},
			[]string{"Leading scheduler: the embedded scheduler (one NATS node, no lease)", "<td>KV_KILN_FLEET_JOBS</td><td>NABC</td><td>leader</td>"}},
		{"three nodes, one lost", clusterOnlyFleet{ci: three(&cluster.LeaderInfo{ID: "sched-b", Renewed: renewed})},
			[]string{"Leading scheduler: <b>sched-b</b>", `<tr class="stream-follower r-offline"><td>KV_KILN_FLEET_JOBS</td><td>n3</td><td>follower</td><td>offline</td><td>17</td><td>9s ago</td>`,
				`<td>KV_KILN_FLEET_JOBS</td><td>n2</td><td>follower</td><td>current</td><td>0</td><td>120ms ago</td>`,
				`<tr class="stream-follower r-behind"><td>KILN_FLEET_LOGS</td><td>n1</td><td>follower</td><td>catching up</td><td>5</td>`}},
		{"no scheduler leads", clusterOnlyFleet{ci: three(nil)}, []string{"Leading scheduler: none (no scheduler holds the lease)"}},
		{"cluster state unreadable", clusterOnlyFleet{err: errors.New("stream KV_KILN_FLEET_JOBS: nats: timeout")},
			[]string{"The cluster's state could not be read: stream KV_KILN_FLEET_JOBS: nats: timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newFleetConsole(t, tc.fleet).client()
			code, body := cl.get("/fleet")
			if code != 200 {
				t.Fatalf("GET /fleet: %d %s", code, body)
			}
			text := html.UnescapeString(body)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("fleet page lacks %q:\n%s", w, body)
				}
			}
			var api fleetView
			cl.getJSON("/api/fleet", &api)
			if tc.fleet.err != nil {
				if api.Cluster != nil || api.ClusterError != tc.fleet.err.Error() {
					t.Errorf("api cluster %+v, error %q", api.Cluster, api.ClusterError)
				}
				return
			}
			if api.Cluster == nil || len(api.Cluster.Streams) != len(tc.fleet.ci.Streams) {
				t.Fatalf("api cluster %+v, want %+v", api.Cluster, tc.fleet.ci)
			}
			if (api.Cluster.Scheduler == nil) != (tc.fleet.ci.Scheduler == nil) ||
				api.Cluster.Scheduler != nil && api.Cluster.Scheduler.ID != tc.fleet.ci.Scheduler.ID {
				t.Errorf("api scheduler %+v, want %+v", api.Cluster.Scheduler, tc.fleet.ci.Scheduler)
			}
			for i, s := range tc.fleet.ci.Streams {
				got := api.Cluster.Streams[i]
				if got.Name != s.Name || got.Leader != s.Leader || len(got.Replicas) != len(s.Replicas) {
					t.Errorf("api stream %d: %+v, want %+v", i, got, s)
				}
			}
		})
	}
}

// The embedded fleet's page names its scheduler and its streams' one node.
func TestFleetPageEmbeddedCluster(t *testing.T) {
	f := startTestFleet(t)
	cl := newFleetConsole(t, f.Client).client()
	var api fleetView
	cl.getJSON("/api/fleet", &api)
	if api.Cluster == nil || len(api.Cluster.Streams) == 0 || api.ClusterError != "" {
		t.Fatalf("api cluster %+v (error %q)", api.Cluster, api.ClusterError)
	}
	_, body := cl.get("/fleet")
	text := html.UnescapeString(body)
	if !strings.Contains(text, "the embedded scheduler (one NATS node, no lease)") {
		t.Errorf("fleet page does not name the embedded scheduler:\n%s", body)
	}
	for _, s := range api.Cluster.Streams {
		if !regexp.MustCompile(`<td>` + regexp.QuoteMeta(s.Name) + `</td><td>[^<]+</td><td>leader</td>`).MatchString(text) {
			t.Errorf("fleet page lacks stream %s:\n%s", s.Name, body)
		}
	}
}
