package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/spf13/cobra"
)

func init() {
	var nf natsFlags
	var asJSON bool
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Administer the build fleet: pools, workers, queues, client rates, updates",
	}
	nf.add(admin.PersistentFlags())
	admin.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	withClient := func(cmd *cobra.Command, f func(ctx context.Context, c *cluster.Client) error) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), 24*time.Hour)
		defer cancel()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		nc, err := nf.connect(cctx, "kiln-admin", "")
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := cluster.NewClient(nc)
		if err != nil {
			return err
		}
		return f(ctx, c)
	}
	printJSON := func(w io.Writer, v any) error {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(v)
	}
	short := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 30*time.Second)
	}

	admin.AddCommand(&cobra.Command{
		Use: "cluster", Short: "Show which scheduler leads, and the NATS nodes keeping each stream of the fleet with their lag", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				ctx, cancel := short(ctx)
				defer cancel()
				ci, err := c.ClusterInfo(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), ci)
				}
				return printClusterInfo(cmd.OutOrStdout(), ci, time.Now())
			})
		},
	})
	admin.AddCommand(&cobra.Command{
		Use: "pools", Short: "List pools with workers, capacity, running and queued jobs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				ctx, cancel := short(ctx)
				defer cancel()
				ps, err := c.Pools(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), ps)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "POOL\tWORKERS\tACTIVE\tCAPACITY\tRUNNING\tQUEUED\tAFFINITY")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.0f%%\n", p.Name, p.Workers, p.Active, p.Capacity, p.Running, p.Queued, 100*p.AffinityHit)
				}
				return tw.Flush()
			})
		},
	})
	admin.AddCommand(&cobra.Command{
		Use: "workers", Short: "List workers with state, load, running jobs and last heartbeat", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				ctx, cancel := short(ctx)
				defer cancel()
				ws, err := c.Workers(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), ws)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WORKER\tPOOL\tSTATE\tLOAD\tRUNNING\tLAST SEEN\tREASON")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s ago\t%s\n", w.Name, w.Pool, w.State, len(w.Running), w.Capacity,
						strings.Join(w.Running, ","), time.Since(w.LastSeen).Round(time.Second), w.Reason)
				}
				return tw.Flush()
			})
		},
	})
	var limit int
	queue := &cobra.Command{
		Use: "queue POOL", Short: "Show a pool's running jobs and queue: position, estimated start, why each job waits", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				ctx, cancel := short(ctx)
				defer cancel()
				q, err := c.Queue(ctx, args[0], limit)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), q)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "pool %s: %d running, %d queued\n", q.Pool, len(q.Running), q.Total)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				for _, r := range q.Running {
					fmt.Fprintf(tw, "running\t%s\t%s\ton %s (attempt %d) for %s\n", r.ID, r.Client, r.Worker, r.Attempt, time.Since(r.Started).Round(time.Second))
				}
				for _, e := range q.Queued {
					lane := "background"
					if e.Urgent {
						lane = "urgent"
					}
					start := "?"
					if !e.EstimatedStart.IsZero() {
						start = "in " + time.Until(e.EstimatedStart).Round(time.Second).String()
					}
					fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\tstarts %s\t%s\n", e.Position, e.ID, e.Client, lane, start, e.Why)
				}
				return tw.Flush()
			})
		},
	}
	queue.Flags().IntVar(&limit, "limit", 100, "queue entries to show")
	admin.AddCommand(queue)

	var wait bool
	pause := &cobra.Command{
		Use: "pause WORKER", Short: "Stop giving jobs to a worker; with --wait, wait until its running jobs finish", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				if err := c.Pause(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s paused\n", args[0])
				if !wait {
					return nil
				}
				if err := c.WaitDrained(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s drained\n", args[0])
				return nil
			})
		},
	}
	pause.Flags().BoolVar(&wait, "wait", false, "wait until the worker's running jobs have finished")
	admin.AddCommand(pause)
	simple := func(use, short string, f func(*cluster.Client, context.Context, string) error, done string) {
		admin.AddCommand(&cobra.Command{
			Use: use + " WORKER", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
					if err := f(c, ctx, args[0]); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", args[0], done)
					return nil
				})
			},
		})
	}
	simple("unpause", "Let a paused worker take jobs again", (*cluster.Client).Unpause, "unpaused")
	simple("forget", "Drop a worker from the records (its running jobs are re-queued)", (*cluster.Client).Forget, "forgotten")
	admin.AddCommand(&cobra.Command{
		Use: "set-rate CLIENT RATE", Short: "Set a client's share of each pool relative to other clients (default 1)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := strconv.ParseFloat(args[1], 64)
			if err != nil || r <= 0 {
				return fmt.Errorf("RATE %q: want a positive number", args[1])
			}
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				if err := c.SetRate(ctx, args[0], r); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rate of %s is %g\n", args[0], r)
				return nil
			})
		},
	})
	admin.AddCommand(&cobra.Command{
		Use: "update POOL", Short: "Rolling update: drain and restart one worker, then the others one by one", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, func(ctx context.Context, c *cluster.Client) error {
				return c.UpdatePool(ctx, args[0], func(s string) { fmt.Fprintln(os.Stderr, s) })
			})
		},
	})
	addCommand(admin)
}
