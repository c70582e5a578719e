package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kiln-ci/kiln/cluster"
)

// printClusterInfo writes which scheduler leads and, per stream of the fleet, its leader
// node and each follower's state and lag.
func printClusterInfo(w io.Writer, ci *cluster.ClusterInfo, now time.Time) error {
	if s := ci.Scheduler; s != nil {
		fmt.Fprintf(w, "scheduler leader: %s (lease renewed %s ago)\n", s.ID, now.Sub(s.Renewed).Round(time.Millisecond))
	} else {
		fmt.Fprintln(w, "scheduler leader: none (no scheduler holds the lease)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tNODE\tROLE\tSTATE\tLAG\tLAST SEEN\tMESSAGES")
	for _, s := range ci.Streams {
		leader := s.Leader
		if leader == "" {
			leader = "(single node)"
			if s.Cluster != "" {
				leader = "(no leader)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\tleader\tcurrent\t0\t-\t%d\n", s.Name, leader, s.Messages)
		for _, r := range s.Replicas {
			fmt.Fprintf(tw, "%s\t%s\tfollower\t%s\t%d\t%s ago\t\n", s.Name, r.Node, r.State(), r.Lag, r.Active.Round(time.Millisecond))
		}
	}
	return tw.Flush()
}
