package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/spf13/cobra"
)

func init() {
	var o cluster.NodeOptions
	var token string
	c := &cobra.Command{
		Use:   "nats",
		Short: "Run one node of a NATS cluster with JetStream for the fleet",
		Long: `Run one NATS server with JetStream (data in --store) that joins a cluster: give each node
its own --name, --store and addresses, the same --cluster name, and --routes to the
others' --cluster-listen addresses. Three nodes form a cluster that keeps working when
one is lost; run the schedulers with --replicas 3 so that the fleet's streams and
buckets are kept on all three. Clients connect with --nats URL1,URL2,URL3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			tok, err := secretFlag(token)
			if err != nil {
				return fmt.Errorf("--token: %w", err)
			}
			o.Token = tok
			srv, err := cluster.StartNode(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "NATS node", o.Name, "at", srv.ClientURL())
			<-ctx.Done()
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Name, "name", "", "server name, unique in the cluster")
	f.StringVar(&o.StoreDir, "store", "", "JetStream store folder of this node")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:4222", "client address")
	f.StringVar(&o.Cluster, "cluster", "kiln", "cluster name, the same on every node")
	f.StringVar(&o.ClusterListen, "cluster-listen", "127.0.0.1:6222", "address the other nodes route to")
	f.StringSliceVar(&o.Routes, "routes", nil, "the other nodes' cluster addresses, nats-route://host:port (repeat or comma-separate)")
	f.StringVar(&token, "token", os.Getenv("KILN_NATS_TOKEN"), "token clients must present (@FILE reads a file; env KILN_NATS_TOKEN)")
	addCommand(c)
}
