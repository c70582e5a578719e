package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/healthcheck"
)

func init() {
	c := &cobra.Command{Use: "health-check", Short: "The health check: plan a run here, or start runs, see progress and change switches on a server",
		Long: `plan works on a local clone. The other commands talk to a kiln server running the health
check (kiln serve --service health-check), as an admin: log in with --user (the password from
KILN_PASSWORD or the terminal) or give a token (--token, KILN_TOKEN; kiln ctl login prints one).`}
	server := os.Getenv("KILN_SERVER")
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	pf := c.PersistentFlags()
	pf.StringVar(&ctlOpts.server, "server", server, "URL of the kiln console (env KILN_SERVER)")
	pf.StringVar(&ctlOpts.token, "token", os.Getenv("KILN_TOKEN"), "bearer token, as printed by: kiln ctl login (env KILN_TOKEN)")
	pf.StringVar(&ctlOpts.user, "user", "", "log in as this user; the password comes from KILN_PASSWORD or the terminal")
	pf.BoolVar(&ctlOpts.json, "json", false, "print the server's JSON answers as they are")
	c.AddCommand(healthCheckPlanCmd(), healthCheckRunCmd(), healthCheckStatusCmd(), healthCheckSetCmd())
	c.AddCommand(healthCheckSwitchCmds()...)
	addCommand(c)
}

const healthCheckAdmin = healthcheck.Prefix + "/admin"

func healthCheckRunCmd() *cobra.Command {
	var cand healthcheck.CandidateRequest
	var wait bool
	c := &cobra.Command{
		Use:   "run",
		Short: "Start a run now (a candidate run with --candidate or --ref), and with --wait show its progress until it ends",
		Example: `  kiln health-check run --wait
  kiln health-check run --ref my-branch --wait               # only what my-branch can affect, compared with the latest run
  kiln health-check run --candidate 5.4-beta1 --switch 5.4=ocaml-variants.5.4.0~beta1 --scope all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			var o healthcheck.RunOptions
			if cand.Name != "" || cand.Ref != "" || len(cand.Switches) > 0 {
				o.Candidate = &cand
			}
			var r healthcheck.Run
			if err := c.do(cmd.Context(), "POST", healthCheckAdmin+"/run", nil, o, &r); err != nil {
				return err
			}
			if !c.json {
				fmt.Fprintf(c.out, "run %d started at %.12s\n", r.ID, r.Commit)
			}
			if !wait {
				return nil
			}
			return followRun(cmd.Context(), c, r.ID)
		},
	}
	c.Flags().StringVar(&cand.Name, "candidate", "", "make a candidate run of this name (a branch, a pull request, a compiler release)")
	c.Flags().StringVar(&cand.Ref, "ref", "", "the candidate's branch or commit of the opam repository")
	c.Flags().StringVar(&cand.Scope, "scope", "", "what the candidate builds: revdeps (what it changes and their reverse dependencies, the default) or all")
	c.Flags().Var(switchesFlag{&cand.Switches}, "switch", "a switch of the candidate, NAME=COMPILER (repeat; default: the latest run's)")
	c.Flags().BoolVar(&wait, "wait", false, "show the run's progress until it ends")
	return c
}

// switchesFlag reads --switch NAME=COMPILER.
type switchesFlag struct{ s *[]healthcheck.Switch }

func (f switchesFlag) String() string { return "" }
func (f switchesFlag) Type() string   { return "NAME=COMPILER" }
func (f switchesFlag) Set(v string) error {
	n, comp, ok := strings.Cut(v, "=")
	if !ok || n == "" || comp == "" {
		return fmt.Errorf("%q: want NAME=COMPILER", v)
	}
	*f.s = append(*f.s, healthcheck.Switch{Name: n, Compiler: comp})
	return nil
}

// followRun prints a run's progress every few seconds until it ends.
func followRun(ctx context.Context, c *ctlClient, id int64) error {
	json := c.json
	c.json = false
	defer func() { c.json = json }()
	for {
		var r healthcheck.Run
		if err := c.do(ctx, "GET", fmt.Sprintf("%s/run/%d", healthCheckAdmin, id), nil, nil, &r); err != nil {
			return err
		}
		printRunLine(c.out, &r)
		if r.Status.Finished() {
			if r.Status != healthcheck.RunDone {
				return fmt.Errorf("run %d %s: %s", r.ID, r.Status, r.Message)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}

func printRunLine(w io.Writer, r *healthcheck.Run) {
	what := string(r.Kind)
	if r.Candidate != nil {
		what = "candidate " + r.Candidate.Name + fmt.Sprintf(" (against run %d)", r.Candidate.Baseline)
	}
	var counts []string
	for _, st := range healthcheck.States {
		if n := r.Counts[st]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", st, n))
		}
	}
	line := fmt.Sprintf("run %d %s %s at %.12s: %d/%d done", r.ID, what, r.Status, r.Commit, r.Progress.Done, r.Progress.Total)
	if len(counts) > 0 {
		line += " (" + strings.Join(counts, ", ") + ")"
	}
	if !r.Progress.ETA.IsZero() {
		line += ", ends about " + r.Progress.ETA.Local().Format("2006-01-02 15:04")
	}
	if r.Message != "" {
		line += ": " + r.Message
	}
	fmt.Fprintln(w, line)
}

func healthCheckStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status [RUN]",
		Short: "Show the switches, the runs going on with their progress, and the latest runs (or one run)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				var r healthcheck.Run
				if err := c.do(cmd.Context(), "GET", healthCheckAdmin+"/run/"+args[0], nil, nil, &r); err != nil || c.json {
					return err
				}
				printRunLine(c.out, &r)
				return nil
			}
			var st healthcheck.Status
			if err := c.do(cmd.Context(), "GET", healthCheckAdmin+"/status", nil, nil, &st); err != nil || c.json {
				return err
			}
			cfg := st.Config
			fmt.Fprintf(c.out, "repository %s (%s), %s versions, tests %v, lower bounds %v, every %s\n",
				cfg.Repository.URL, cfg.Repository.Branch, cfg.Versions, cfg.WithTest, cfg.LowerBounds, time.Duration(cfg.Interval))
			for _, sw := range cfg.Switches {
				fmt.Fprintf(c.out, "  switch %-10s %s (built with %s)\n", sw.Name, sw.Compiler, sw.BuildWith)
			}
			if len(st.Current) == 0 {
				fmt.Fprintln(c.out, "no run going on")
			}
			for i := range st.Current {
				printRunLine(c.out, &st.Current[i])
			}
			for i := range st.Recent {
				printRunLine(c.out, &st.Recent[i])
			}
			return nil
		},
	}
}

func healthCheckSwitchCmds() []*cobra.Command {
	var sw healthcheck.Switch
	var buildWith string
	add := &cobra.Command{
		Use:     "add-switch NAME COMPILER",
		Short:   "Add a switch (or change the one of that name); the next run checks it",
		Example: "  kiln health-check add-switch 5.3 ocaml-base-compiler.5.3.0 --build-with dune",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sw.Name, sw.Compiler, sw.BuildWith = args[0], args[1], healthcheck.BuildWith(buildWith)
			return healthCheckChange(cmd, "/switch", sw)
		},
	}
	add.Flags().StringVar(&buildWith, "build-with", "opam", "how the switch builds packages: opam or dune")
	add.Flags().StringArrayVar(&sw.Repositories, "repository", nil, "an opam repository added for this switch, NAME=URL (repeat)")
	rm := &cobra.Command{
		Use:   "rm-switch NAME",
		Short: "Remove a switch from the next runs (the runs that checked it keep their results)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return healthCheckChange(cmd, "/switch/remove", map[string]string{"name": args[0]})
		},
	}
	return []*cobra.Command{add, rm}
}

func healthCheckSetCmd() *cobra.Command {
	var keys []string
	for k, v := range healthcheck.Settings {
		keys = append(keys, fmt.Sprintf("  %-13s %s", k, v))
	}
	return &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change a setting of the health check",
		Long:  "Change a setting; the next run uses it. The settings:\n" + strings.Join(slices.Sorted(slices.Values(keys)), "\n"),
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return healthCheckChange(cmd, "/set", map[string]string{"key": args[0], "value": args[1]})
		},
	}
}

// healthCheckChange posts a change of the configuration and prints the switches
// it leaves.
func healthCheckChange(cmd *cobra.Command, path string, body any) error {
	c, err := newCtlClient(cmd)
	if err != nil {
		return err
	}
	var cfg healthcheck.Config
	if err := c.do(cmd.Context(), "POST", healthCheckAdmin+path, nil, body, &cfg); err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.out, "done; the switches are now %s\n", strings.Join(cfg.SwitchNames(), ", "))
	return nil
}

func healthCheckPlanCmd() *cobra.Command {
	var repo, config, rev string
	var all bool
	var sample int
	var outFile string
	c := &cobra.Command{
		Use:   "plan",
		Short: "Solve every package on every switch of a configuration and print counts, time and memory, without building",
		Example: `  kiln health-check plan --repo ~/opam-repository --config health-check.yaml
  kiln health-check plan --repo ~/opam-repository --config health-check.yaml --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := healthcheck.Load(config)
			if err != nil {
				return err
			}
			gitDir := gitDirOf(repo)
			if rev == "" {
				rev = cfg.Repository.Branch
			}
			commit, err := repository.ResolveCommit(ctx, gitDir, rev)
			if err != nil {
				return fmt.Errorf("%s: %w", rev, err)
			}
			start := time.Now()
			r, err := repository.LoadGit(ctx, gitDir, commit)
			if err != nil {
				return err
			}
			loaded := time.Since(start)
			pkgs := healthcheck.Select(r, all || cfg.Versions == "all")
			if sample > 1 {
				pkgs = healthcheck.Sample(pkgs, sample)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "repository %.12s: %d package versions loaded in %s; %d selected (%s)\n\n",
				commit, r.Len(), loaded.Round(time.Millisecond), len(pkgs), map[bool]string{true: "all versions", false: "latest versions"}[all || cfg.Versions == "all"])
			var out *json.Encoder
			if outFile != "" {
				f, err := os.Create(outFile)
				if err != nil {
					return err
				}
				defer f.Close()
				buf := bufio.NewWriter(f)
				defer buf.Flush()
				out = json.NewEncoder(buf)
			}
			fmt.Fprintf(w, "switch\tcompiler\tto build\tnot available\tplan time\tCPU\theap after\n")
			var peak uint64
			pl := &healthcheck.Planner{} // one for every switch: they share its universes
			for _, sw := range cfg.Switches {
				one := *cfg
				one.Switches = []healthcheck.Switch{sw}
				pl.Config = &one
				t0, cpu0 := time.Now(), cpuTime()
				p, err := pl.Plan(ctx, 0, r, pkgs)
				if err != nil {
					return err
				}
				took, cpu := time.Since(t0), cpuTime()-cpu0
				if out != nil {
					if err := writePlan(out, p); err != nil {
						return fmt.Errorf("%s: %w", outFile, err)
					}
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				na := 0
				for _, res := range p.Results {
					if res.State == healthcheck.NotAvailable {
						na++
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%d MiB\n", sw.Name, sw.Compiler, len(p.Jobs), na, took.Round(time.Millisecond), cpu.Round(time.Millisecond), ms.HeapInuse>>20)
				w.Flush() // each switch as it is planned: a full plan takes long
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(w, "\ntotal %s; heap in use at most %d MiB, %d MiB from the system\n", time.Since(start).Round(time.Millisecond), peak>>20, ms.Sys>>20)
			return w.Flush()
		},
	}
	c.Flags().StringVar(&repo, "repo", ".", "the opam repository's git repository (a clone, bare or not)")
	c.Flags().StringVar(&config, "config", "health-check.yaml", "the health check's configuration (see docs/health-check.md)")
	c.Flags().StringVar(&rev, "rev", "", "the commit or branch to plan (default: the configuration's branch)")
	c.Flags().BoolVar(&all, "all", false, "every version of each package, whatever the configuration says")
	c.Flags().StringVar(&outFile, "out", "", "write the plan to FILE, one JSON line a job or a package not available, sorted (to compare two plans)")
	c.Flags().IntVar(&sample, "sample", 0, "plan the versions of one package name in N only (the 1st, the N+1th, … by name), for an estimate")
	return c
}

// writePlan writes a plan's jobs and the packages not available in a stable order.
func writePlan(out *json.Encoder, p *healthcheck.Plan) error {
	jobs := slices.Clone(p.Jobs)
	slices.SortFunc(jobs, func(a, b healthcheck.Job) int { return strings.Compare(a.Key(), b.Key()) })
	for _, j := range jobs {
		if err := out.Encode(j); err != nil {
			return err
		}
	}
	for _, r := range p.Results {
		if r.State == healthcheck.NotAvailable {
			if err := out.Encode(map[string]string{"switch": r.Switch, "package": r.Package, "not-available": r.Message}); err != nil {
				return err
			}
		}
	}
	return nil
}

// cpuTime is the CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
