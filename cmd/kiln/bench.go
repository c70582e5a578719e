package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/services/bench"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

func init() {
	benchCmd := &cobra.Command{
		Use:   "bench",
		Short: "Check benchmark output in current-bench's JSON format; simulate the regression detectors",
	}

	var asJSON bool
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Read a benchmark's output (FILE, or standard input) and list its metrics and the errors by line",
		Long: `Read a benchmark's output the way the bench service does while the benchmark runs:
result objects in current-bench's JSON format (version 3, or the legacy version 1
with "metrics" as an object) mixed with log lines. List the metrics found and every
problem with the line it is on; exit with an error when there is any problem or no
metric at all.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = os.Stdin
			name := "standard input"
			if len(args) == 1 {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r, name = f, args[0]
			}
			out, err := benchfmt.Parse(r, benchfmt.Limits{})
			if err != nil {
				return fmt.Errorf("reading %s: %w", name, err)
			}
			if asJSON {
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				if err := e.Encode(out); err != nil {
					return err
				}
			} else {
				printCheck(out, name)
			}
			switch {
			case len(out.Errors) > 0:
				return fmt.Errorf("%s: %d errors", name, len(out.Errors)+out.DroppedErrors)
			case out.Metrics() == 0:
				return fmt.Errorf("%s: no benchmark results in %d lines", name, out.Lines)
			}
			return nil
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print the results and errors as JSON")
	benchCmd.AddCommand(check)

	var sim detect.SimOptions
	var noise string
	var rerecord bool
	var maxLoad float64
	simulate := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate the regression detectors on recorded benchmark noise and print their figures",
		Long: `Run the interleaved, history and Bencher t-test detectors on a recording of a real
benchmark's noise (bursts of timings; one burst stands for one benchmark job) and
print, for each number of repeats, the false alarms per 100 unchanged commits and the
smallest regression found in 95 % of the commits that have it. With --record, time a
CPU-bound benchmark on this machine first (about 3 minutes) and save it to --noise,
unless the machine is busier than --max-load.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rerecord {
				rec, err := detect.Record(cmd.Context(), detect.RecordOptions{MaxLoad: maxLoad})
				if err != nil {
					return err
				}
				if err := rec.Save(noise); err != nil {
					return err
				}
			}
			rec, err := detect.Load(noise)
			if err != nil {
				return err
			}
			rows, err := detect.Simulate(rec, sim)
			if err != nil {
				return err
			}
			fmt.Printf("%s: %d bursts of %d timings, %s, %s, recorded %s", noise, len(rec.Bursts), len(rec.Bursts[0]), rec.CPU, rec.Kernel, rec.Recorded.Format(time.RFC3339))
			if len(rec.Load) == 2 {
				fmt.Printf(" at load average %.2f to %.2f", rec.Load[0], rec.Load[1])
			}
			fmt.Printf("\n\n%s", detect.Table(rows))
			if rec.Counters != "" {
				fmt.Printf("\ninstructions retired not recorded: %s\n", rec.Counters)
			}
			return nil
		},
	}
	simulate.Flags().StringVar(&noise, "noise", "services/bench/detect/testdata/noise.json", "the noise recording")
	simulate.Flags().BoolVar(&rerecord, "record", false, "record this machine's noise into --noise first")
	simulate.Flags().Float64Var(&maxLoad, "max-load", 3, "with --record, refuse to record when the 1-minute load average is above this (0: record anyway)")
	simulate.Flags().IntVar(&sim.Trials, "trials", 1000, "simulated commits per figure")
	simulate.Flags().IntVar(&sim.History, "history", 20, "earlier commits a history comparison sees")
	simulate.Flags().Float64Var(&sim.Options.Confidence, "confidence", 0.99, "the detector's two-sided confidence")
	simulate.Flags().Float64Var(&sim.Boundary, "bencher-boundary", 0.99, "Bencher's t-test boundary")
	benchCmd.AddCommand(simulate)

	var db, tokenName string
	token := &cobra.Command{
		Use:   "token FORGE/OWNER/NAME",
		Short: "Make a token that submits benchmark results for one repository (printed once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, ok := bench.RepoID(args[0]); !ok {
				return fmt.Errorf("repository %q is not FORGE/OWNER/NAME (gitea/me/lib)", args[0])
			}
			st, err := store.Open(cmd.Context(), db)
			if err != nil {
				return err
			}
			defer st.Close()
			tok, err := st.AddToken(cmd.Context(), args[0], tokenName)
			if err != nil {
				return err
			}
			fmt.Println(tok)
			return nil
		},
	}
	token.Flags().StringVar(&db, "db", "var/bench/bench.db", "the bench service's database (as its --bench-db)")
	token.Flags().StringVar(&tokenName, "name", "submit", "what the token is for, as shown to admins")
	benchCmd.AddCommand(token)

	var bf bench.Backfill
	var bfDB string
	backfill := &cobra.Command{
		Use:   "backfill FORGE/OWNER/NAME RANGE",
		Short: "Benchmark the past commits of a range (A..B) that have no run yet, oldest first",
		Long: `Benchmark each commit of RANGE (git's A..B, first parents) in the clone --git that has
no passed run in the database yet, with the bench section of that commit's .kiln.yml
(commits without one are skipped), and store the runs as the branch's. Ctrl-C stops
after the current commit's run is killed; what was stored stays.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, ok := bench.RepoID(args[0]); !ok {
				return fmt.Errorf("repository %q is not FORGE/OWNER/NAME (gitea/me/lib)", args[0])
			}
			st, err := store.Open(cmd.Context(), bfDB)
			if err != nil {
				return err
			}
			defer st.Close()
			api, err := bench.NewAPI(bench.API{Store: st}, prometheus.NewRegistry())
			if err != nil {
				return err
			}
			bf.API, bf.Repo, bf.Log = api, args[0], os.Stdout
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bf.Run(ctx, args[1])
			fmt.Printf("%d runs, %d commits already benchmarked, %d without a bench section, %d failed\n",
				len(rep.Ran), len(rep.Present), len(rep.Skipped), len(rep.Failed))
			return err
		},
	}
	backfill.Flags().StringVar(&bfDB, "db", "var/bench/bench.db", "the bench service's database (as its --bench-db)")
	backfill.Flags().StringVar(&bf.GitDir, "git", ".", "a clone of the repository holding the range")
	backfill.Flags().StringVar(&bf.Branch, "branch", "main", "the branch the runs are stored under")
	backfill.Flags().StringVar(&bf.Env, "env", "", "the environment the runs are stored under")
	backfill.Flags().StringVar(&bf.CPUs, "cpus", "", "pin the benchmark to these CPUs (taskset -c)")
	benchCmd.AddCommand(backfill)
	addCommand(benchCmd)
}

func printCheck(out *benchfmt.Output, name string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "BENCHMARK\tTEST\tMETRIC\tKIND\tSAMPLES\tAVERAGE\tUNITS\tTREND\tLINES")
	for _, b := range out.Benchmarks {
		for _, r := range b.Results {
			for _, m := range r.Metrics {
				first := m.Lines[0]
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%g\t%s\t%s\t%d-%d\n", b.Name, r.Test, m.Name, m.Value.Kind,
					len(m.Value.Points()), m.Value.Central(), m.Units, m.Trend, first.First, first.Last)
			}
		}
	}
	w.Flush()
	for _, e := range out.Errors {
		if e.Col > 0 {
			fmt.Fprintf(os.Stderr, "%s:%d:%d: %s\n", name, e.Line, e.Col, e.Msg)
		} else {
			fmt.Fprintf(os.Stderr, "%s:%d: %s\n", name, e.Line, e.Msg)
		}
	}
	if out.DroppedErrors > 0 {
		fmt.Fprintf(os.Stderr, "%s: %d more errors\n", name, out.DroppedErrors)
	}
}
