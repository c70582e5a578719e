package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

// opamFlags are the flags shared by the opam commands.
type opamFlags struct {
	repo     string
	commit   string
	json     bool
	platform []string
	cacheDir string
	noCache  bool
}

func (f *opamFlags) addRepo(c *cobra.Command) {
	c.Flags().StringVar(&f.repo, "repo", ".", "opam repository: a checkout (holding packages/) or a git repository")
	c.Flags().StringVar(&f.commit, "commit", "", "commit to read from the git repository (default HEAD; implies reading from git)")
}

// addCache adds the flags of the on-disk universe cache.
func (f *opamFlags) addCache(c *cobra.Command) {
	dir, err := os.UserCacheDir()
	if err == nil {
		dir = filepath.Join(dir, "kiln", "opam")
	}
	c.Flags().StringVar(&f.cacheDir, "cache-dir", dir, "where to keep the index of each repository commit read from git, per platform")
	c.Flags().BoolVar(&f.noCache, "no-cache", false, "read the repository, without the on-disk cache")
}

// fromGit says whether the flags name a git repository to read rather than a checkout.
func (f *opamFlags) fromGit() bool {
	if f.commit != "" {
		return true
	}
	st, err := os.Stat(filepath.Join(f.repo, "packages"))
	return err != nil || !st.IsDir()
}

// cacheKey names the repository commit the flags read from git, with the platform and
// flags, as the on-disk caches key what they hold. key is "" when the flags name a
// checkout, or the cache is off; gitDir is "" for a checkout.
func (f *opamFlags) cacheKey(ctx context.Context, plat solver.Platform, flags solver.Flags) (commit, gitDir, key string, err error) {
	if !f.fromGit() {
		return "", "", "", nil
	}
	gitDir = gitDirOf(f.repo)
	rev := f.commit
	if rev == "" {
		rev = "HEAD"
	}
	commit, err = repository.ResolveCommit(ctx, gitDir, rev)
	if err != nil {
		return "", "", "", err
	}
	if !f.noCache && f.cacheDir != "" {
		key = fmt.Sprintf("%s %v %v", commit, plat, flags)
	}
	return commit, gitDir, key, nil
}

// cachePath is the file of the on-disk cache holding what key names, of a kind
// (the file's extension).
func (f *opamFlags) cachePath(key, kind string) string {
	return filepath.Join(f.cacheDir, fmt.Sprintf("%x.%s", sha256.Sum256([]byte(key)), kind))
}

// universe returns the platform's view of the repository named by the flags. A
// repository read from git is cached on disk by commit, platform and flags, so the
// next call for the same commit reads the cache instead (see repository.Fill for
// the opam files, which are not in it). gitDir is "" for a checkout.
func (f *opamFlags) universe(ctx context.Context, plat solver.Platform, flags solver.Flags) (u *solver.Universe, gitDir string, err error) {
	commit, gitDir, key, err := f.cacheKey(ctx, plat, flags)
	if err != nil {
		return nil, "", err
	}
	if commit == "" {
		r, err := repository.LoadDir(ctx, f.repo)
		if err != nil {
			return nil, "", err
		}
		return solver.NewUniverseFlags(r, plat, flags), "", nil
	}
	path := ""
	if key != "" {
		path = f.cachePath(key, "universe")
		if data, err := os.ReadFile(path); err == nil {
			// The decoding allocates a lot of short-lived memory and keeps it all.
			old := debug.SetGCPercent(-1)
			u, err := solver.ReadCache(data, commit, plat, flags)
			debug.SetGCPercent(old)
			if err == nil {
				return u, gitDir, nil
			}
		}
	}
	r, err := repository.LoadGit(ctx, gitDir, commit)
	if err != nil {
		return nil, "", err
	}
	u = solver.NewUniverseFlags(r, plat, flags)
	if path != "" {
		if err := writeCache(path, u.WriteCache); err != nil {
			fmt.Fprintf(os.Stderr, "kiln: no universe cache: %v\n", err)
		}
	}
	return u, gitDir, nil
}

// writeCache writes a cache file at path with write, atomically, and keeps the newest
// files of its kind.
func writeCache(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	kind := filepath.Ext(path)
	tmp, err := os.CreateTemp(filepath.Dir(path), kind+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	pruneCache(filepath.Dir(path), kind, keepCaches[kind])
	return nil
}

// keepCaches is the number of cache files of each kind kept (the most recently
// written): universes are megabytes, answers a few kilobytes.
var keepCaches = map[string]int{".universe": 8, ".revdeps": 512}

// pruneCache removes all but the keep newest cache files of a kind (extension) of dir.
func pruneCache(dir, kind string, keep int) {
	files, _ := filepath.Glob(filepath.Join(dir, "*"+kind))
	type aged struct {
		path string
		mod  time.Time
	}
	var all []aged
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			all = append(all, aged{f, st.ModTime()})
		}
	}
	slices.SortFunc(all, func(a, b aged) int { return b.mod.Compare(a.mod) })
	for _, a := range all[min(keep, len(all)):] {
		os.Remove(a.path)
	}
}

// fill reads the opam files of pkgs that a cached universe does not hold.
func fill(ctx context.Context, gitDir string, pkgs []*repository.Package) error {
	if gitDir == "" {
		return nil
	}
	return repository.Fill(ctx, gitDir, pkgs)
}

func (f *opamFlags) addPlatform(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.platform, "var", nil, "platform variable NAME=VALUE, overriding the Debian 12 x86_64 defaults (repeatable)")
}

// gitDirOf returns the git directory of a worktree or a bare repository.
func gitDirOf(p string) string {
	if st, err := os.Stat(filepath.Join(p, ".git")); err == nil && st.IsDir() {
		return filepath.Join(p, ".git")
	}
	return p
}

func (f *opamFlags) platformVars() (solver.Platform, error) {
	p := solver.DebianAMD64()
	for _, kv := range f.platform {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--var %q: want NAME=VALUE", kv)
		}
		p[k] = v
	}
	return p, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress returns a progress bar on a terminal's stderr, or nil.
func progress(max int, what string) *progressbar.ProgressBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return progressbar.NewOptions(max, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
}

func init() {
	c := &cobra.Command{Use: "opam", Short: "opam package metadata: lint, show, solve, reverse dependencies, pull-request diffs"}
	addProfile(c)
	c.AddCommand(opamLintCmd(), opamShowCmd(), opamSolveCmd(), opamRevdepsCmd(), opamDiffCmd())
	addCommand(c)
}

// addProfile adds --cpuprofile to c and its subcommands.
func addProfile(c *cobra.Command) {
	var path string
	var out *os.File
	c.PersistentFlags().StringVar(&path, "cpuprofile", "", "write a CPU profile of the command to this file")
	c.PersistentPreRunE = func(*cobra.Command, []string) error {
		if path == "" {
			return nil
		}
		var err error
		if out, err = os.Create(path); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return pprof.StartCPUProfile(out)
	}
	c.PersistentPostRunE = func(*cobra.Command, []string) error {
		if out == nil {
			return nil
		}
		pprof.StopCPUProfile()
		return out.Close()
	}
}

func opamLintCmd() *cobra.Command {
	var f opamFlags
	var only21, publication, checkUpstream bool
	c := &cobra.Command{
		Use:   "lint PATH...",
		Short: "Check package directories or opam files as opam lint and opam-repository CI do",
		Long: `Check package directories (packages/NAME/NAME.VERSION) or single opam files.
Exit status 1 when any error is found.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := lint.Context{Checks: lint.OpamLint, CheckUpstream: true}
			if publication {
				ctx = lint.DefaultContext()
			}
			if only21 {
				// opam 2.1 checks the url's checksum (59) only with --check-upstream.
				ctx.Opam, ctx.CheckUpstream = "2.1", checkUpstream
			}
			var all []lint.Finding
			for _, a := range args {
				st, err := os.Stat(a)
				if err != nil {
					return err
				}
				if st.IsDir() {
					abs, _ := filepath.Abs(a)
					in, err := lint.ReadDir(filepath.Dir(abs), filepath.Base(abs))
					if err != nil {
						return err
					}
					in.Dir = a
					all = append(all, lint.Lint(in, ctx)...)
					continue
				}
				data, err := os.ReadFile(a)
				if err != nil {
					return err
				}
				pkg, _ := opam.ParsePackage(filepath.Base(filepath.Dir(a)))
				all = append(all, lint.LintFile(a, data, pkg, ctx)...)
			}
			out := cmd.OutOrStdout()
			if f.json {
				if all == nil {
					all = []lint.Finding{}
				}
				if err := printJSON(out, all); err != nil {
					return err
				}
			} else {
				for _, x := range all {
					fmt.Fprintln(out, x)
				}
				if len(all) == 0 {
					fmt.Fprintln(out, "no problem found")
				}
			}
			for _, x := range all {
				if x.Severity == lint.Error {
					return errors.New("lint found errors")
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&f.json, "json", false, "print findings as JSON")
	c.Flags().BoolVar(&only21, "opam-2.1", false, "reproduce opam 2.1's lint instead of the current one")
	c.Flags().BoolVar(&checkUpstream, "check-upstream", false, "with --opam-2.1: also the check opam lint --check-upstream adds without a download (59, url without a checksum)")
	c.Flags().BoolVar(&publication, "publication", false, "add the opam-repository CI rules for published packages")
	return c
}

func opamShowCmd() *cobra.Command {
	var f opamFlags
	c := &cobra.Command{
		Use:   "show NAME[.VERSION]",
		Short: "Show a package's versions and, for one version, its dependencies on a platform",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			plat, err := f.platformVars()
			if err != nil {
				return err
			}
			u, gitDir, err := f.universe(ctx, plat, solver.Flags{})
			if err != nil {
				return err
			}
			r := u.Repo
			name, ver := opam.PackageName(args[0]), opam.Version("")
			if r.Versions(name) == nil {
				if p, ok := opam.ParsePackage(args[0]); ok {
					name, ver = p.Name, p.Version
				}
			}
			vs := r.Versions(name)
			if len(vs) == 0 {
				return fmt.Errorf("no package %s in the repository", args[0])
			}
			p := vs[len(vs)-1]
			if ver != "" {
				if p = r.Get(opam.Package{Name: name, Version: ver}); p == nil {
					return fmt.Errorf("no version %s of %s", ver, name)
				}
			}
			if err := fill(ctx, gitDir, []*repository.Package{p}); err != nil {
				return err
			}
			cand := u.Cand(p.Package)
			if cand == nil {
				var twins []string
				for _, t := range r.Twins(p.Package) {
					twins = append(twins, t.Package.String())
				}
				return fmt.Errorf("%s is not seen by opam: its version equals that of %s as opam compares versions", p.Package, strings.Join(twins, ", "))
			}
			type show struct {
				Package     string   `json:"package"`
				Versions    []string `json:"versions"`
				Path        string   `json:"path"`
				Synopsis    string   `json:"synopsis,omitempty"`
				Maintainer  []string `json:"maintainer,omitempty"`
				Unavailable string   `json:"unavailable,omitempty"`
				Depends     []string `json:"depends"`
				Conflicts   []string `json:"conflicts,omitempty"`
				Depopts     []string `json:"depopts,omitempty"`
				Error       string   `json:"error,omitempty"`
			}
			s := show{Package: p.Package.String(), Path: p.Path, Unavailable: cand.Unavailable}
			for _, v := range vs {
				s.Versions = append(s.Versions, string(v.Version))
			}
			if p.File != nil {
				s.Synopsis, s.Maintainer = p.File.Synopsis(), p.File.Maintainer()
			} else {
				s.Error = p.Err.Error()
			}
			for _, cl := range cand.Deps {
				var alts []string
				for _, a := range cl {
					if vs := u.Versions(a.Name); len(vs) == 1 && vs[0].Aux {
						alts = append(alts, "("+vs[0].Def.Format(opam.Atom.String)+")")
						continue
					}
					alts = append(alts, a.String())
				}
				s.Depends = append(s.Depends, strings.Join(alts, " | "))
			}
			for _, a := range cand.Conflicts {
				s.Conflicts = append(s.Conflicts, a.String())
			}
			for _, a := range cand.Depopts {
				s.Depopts = append(s.Depopts, a.String())
			}
			out := cmd.OutOrStdout()
			if f.json {
				return printJSON(out, s)
			}
			fmt.Fprintf(out, "package     %s\nversions    %s\npath        %s\n", s.Package, strings.Join(s.Versions, " "), s.Path)
			if s.Synopsis != "" {
				fmt.Fprintf(out, "synopsis    %s\n", s.Synopsis)
			}
			if len(s.Maintainer) > 0 {
				fmt.Fprintf(out, "maintainer  %s\n", strings.Join(s.Maintainer, ", "))
			}
			if s.Error != "" {
				fmt.Fprintf(out, "error       %s\n", s.Error)
			}
			if s.Unavailable != "" {
				fmt.Fprintf(out, "unavailable %s\n", s.Unavailable)
			}
			fmt.Fprintf(out, "depends (on %s/%s, with build dependencies):\n", plat["os-distribution"], plat["arch"])
			for _, d := range s.Depends {
				fmt.Fprintf(out, "  %s\n", d)
			}
			if len(s.Depopts) > 0 {
				fmt.Fprintf(out, "depopts:\n  %s\n", strings.Join(s.Depopts, "\n  "))
			}
			if len(s.Conflicts) > 0 {
				fmt.Fprintf(out, "conflicts:\n  %s\n", strings.Join(s.Conflicts, "\n  "))
			}
			return nil
		},
	}
	f.addRepo(c)
	f.addCache(c)
	f.addPlatform(c)
	c.Flags().BoolVar(&f.json, "json", false, "print as JSON")
	return c
}

func opamSolveCmd() *cobra.Command {
	var f opamFlags
	var withTest, lower, allLatest bool
	var pins []string
	c := &cobra.Command{
		Use:   "solve PACKAGE...",
		Short: "Find the packages to install (newest versions first) on a platform",
		Long: `Find an installable set for the packages given (NAME, NAME.VERSION or NAME>=VERSION),
preferring the newest versions (the oldest with --lower-bounds). --pin adds local opam
files as NAME.dev (NAME from the file name NAME.opam, or the name field).
--all-latest solves the newest version of every package alone and prints a summary.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			plat, err := f.platformVars()
			if err != nil {
				return err
			}
			u, gitDir, err := f.universe(ctx, plat, solver.Flags{})
			if err != nil {
				return err
			}
			req := solver.Request{WithTest: withTest, LowerBounds: lower}
			for _, p := range pins {
				pk, err := readPin(p)
				if err != nil {
					return err
				}
				req.Pins = append(req.Pins, pk)
				if len(args) == 0 {
					req.Install = append(req.Install, opam.Atom{Name: pk.Name})
				}
			}
			if allLatest {
				if withTest {
					if err := fill(ctx, gitDir, u.Repo.Packages()); err != nil {
						return err
					}
				}
				return solveAllLatest(ctx, cmd.OutOrStdout(), u, req, f.json)
			}
			atoms, err := solver.ParseRequest(args)
			if err != nil {
				return err
			}
			req.Install = append(req.Install, atoms...)
			if len(req.Install) == 0 {
				return errors.New("nothing to solve: name packages or --pin files")
			}
			if withTest {
				// The test dependencies of the packages asked for are read from their files.
				for _, a := range req.Install {
					if err := fill(ctx, gitDir, u.Repo.Versions(a.Name)); err != nil {
						return err
					}
				}
			}
			sel, err := u.Solve(ctx, req)
			out := cmd.OutOrStdout()
			if f.json {
				type result struct {
					Packages []string `json:"packages,omitempty"`
					Error    string   `json:"error,omitempty"`
				}
				var res result
				if err != nil {
					res.Error = err.Error()
				} else {
					for _, p := range sel.Packages {
						res.Packages = append(res.Packages, p.String())
					}
				}
				if jerr := printJSON(out, res); jerr != nil {
					return jerr
				}
				return err
			}
			if err != nil {
				return err
			}
			for _, p := range sel.Packages {
				fmt.Fprintln(out, p)
			}
			return nil
		},
	}
	f.addRepo(c)
	f.addCache(c)
	f.addPlatform(c)
	c.Flags().BoolVar(&f.json, "json", false, "print as JSON")
	c.Flags().BoolVar(&withTest, "with-test", false, "add the test dependencies of the packages asked for")
	c.Flags().BoolVar(&lower, "lower-bounds", false, "prefer the oldest versions")
	c.Flags().BoolVar(&allLatest, "all-latest", false, "solve the newest version of every package, one at a time")
	c.Flags().StringArrayVar(&pins, "pin", nil, "local opam file to pin as NAME.dev (repeatable)")
	return c
}

func readPin(path string) (*repository.Package, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := opam.Parse(path, data)
	if err != nil {
		return nil, err
	}
	name := f.Name()
	if name == "" {
		base := filepath.Base(path)
		name = opam.PackageName(strings.TrimSuffix(base, ".opam"))
		if base == "opam" {
			name = opam.PackageName(filepath.Base(filepath.Dir(path)))
		}
	}
	if !opam.ValidName(string(name)) {
		return nil, fmt.Errorf("%s: cannot tell the package name (add a name field or call the file NAME.opam)", path)
	}
	return &repository.Package{Package: opam.Package{Name: name, Version: "dev"}, Path: path, Data: data, File: f}, nil
}

func solveAllLatest(ctx context.Context, out io.Writer, u *solver.Universe, base solver.Request, asJSON bool) error {
	names := u.Repo.Names()
	bar := progress(len(names), "solving")
	type verdict struct {
		Package string `json:"package"`
		OK      bool   `json:"installable"`
		Error   string `json:"error,omitempty"`
	}
	var verdicts []verdict
	var times []time.Duration
	start := time.Now()
	ok := 0
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := u.Repo.Latest(n)
		req := base
		req.AnySolution = true
		req.Install = []opam.Atom{{Name: n, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})}}
		t0 := time.Now()
		_, err := u.Solve(ctx, req)
		times = append(times, time.Since(t0))
		v := verdict{Package: p.Package.String(), OK: err == nil}
		if err != nil {
			v.Error = err.Error()
		} else {
			ok++
		}
		verdicts = append(verdicts, v)
		if bar != nil {
			bar.Add(1)
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if asJSON {
		return printJSON(out, verdicts)
	}
	for _, v := range verdicts {
		if !v.OK {
			first, _, _ := strings.Cut(v.Error, "\n")
			fmt.Fprintf(out, "not installable: %s (%s)\n", v.Package, first)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	fmt.Fprintf(out, "%d packages: %d installable, %d not; solve median %v, p99 %v, total %v\n",
		len(names), ok, len(names)-ok, times[len(times)/2], times[len(times)*99/100], time.Since(start).Round(time.Millisecond))
	return nil
}

func opamRevdepsCmd() *cobra.Command {
	var f opamFlags
	var opts revdeps.Options
	var withTest, allVersions bool
	c := &cobra.Command{
		Use:   "revdeps NAME[.VERSION]",
		Short: "List the package versions that depend on a package and can be installed with it",
		Long: `List the reverse dependencies of a package version, as
opam list --depends-on P --coinstallable-with P --all-versions [--recursive] [--depopts] [--with-test] [-A].
With a bare NAME, the reverse dependencies of every version of it, each coinstallable with the
version it depends on.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pkg, ok := opam.Package{Name: opam.PackageName(args[0])}, opam.ValidName(args[0])
			if !ok {
				pkg, ok = opam.ParsePackage(args[0])
			}
			if !ok {
				return fmt.Errorf("want NAME or NAME.VERSION, got %q", args[0])
			}
			plat, err := f.platformVars()
			if err != nil {
				return err
			}
			flags := solver.Flags{WithTest: withTest}
			_, _, key, err := f.cacheKey(ctx, plat, flags)
			if err != nil {
				return err
			}
			list, cached := []opam.Package(nil), false
			if key != "" {
				key = f.cachePath(fmt.Sprintf("%s revdeps %s %s recursive=%t depopts=%t all=%t any=%t build=%s",
					key, pkg.Name, pkg.Version, opts.Recursive, opts.Depopts, opts.All, opts.AnyInstallable, buildStamp()), "revdeps")
				list, cached = readAnswer(key)
			}
			if !cached {
				if list, err = revdepsOf(ctx, &f, plat, flags, pkg, opts); err != nil {
					return err
				}
				if key != "" {
					if err := writeCache(key, func(w io.Writer) error { return writeAnswer(w, list) }); err != nil {
						fmt.Fprintf(os.Stderr, "kiln: no answer cache: %v\n", err)
					}
				}
			}
			if !allVersions {
				list = revdeps.Latest(list)
			}
			out := cmd.OutOrStdout()
			if f.json {
				s := []string{}
				for _, p := range list {
					s = append(s, p.String())
				}
				return printJSON(out, s)
			}
			for _, p := range list {
				fmt.Fprintln(out, p)
			}
			return nil
		},
	}
	f.addRepo(c)
	f.addCache(c)
	f.addPlatform(c)
	c.Flags().BoolVar(&f.json, "json", false, "print as JSON")
	c.Flags().BoolVar(&opts.Recursive, "recursive", false, "follow reverse dependencies transitively")
	c.Flags().BoolVar(&opts.Depopts, "depopts", false, "count optional dependencies")
	c.Flags().BoolVar(&withTest, "with-test", false, "count test dependencies")
	c.Flags().BoolVar(&opts.AnyInstallable, "no-coinstallable", false, "skip the coinstallability check")
	c.Flags().BoolVarP(&opts.All, "all", "A", false, "count versions unavailable on the platform too (with --no-coinstallable: they are never coinstallable)")
	c.Flags().BoolVar(&allVersions, "all-versions", true, "list every version; --all-versions=false lists the newest of each package")
	return c
}

// revdepsOf computes the reverse dependencies of pkg (of every version of a bare
// name), with a progress bar on a terminal.
func revdepsOf(ctx context.Context, f *opamFlags, plat solver.Platform, flags solver.Flags, pkg opam.Package, opts revdeps.Options) ([]opam.Package, error) {
	u, _, err := f.universe(ctx, plat, flags)
	if err != nil {
		return nil, err
	}
	if vs := u.Versions(pkg.Name); len(vs) > 0 {
		// The reverse index, built on the first question, is kept whole: collecting
		// while it is made frees nothing and takes a third of the time.
		old := debug.SetGCPercent(-1)
		revdeps.Candidates(u, opam.Package{Name: vs[0].Name, Version: vs[0].Version}, opts)
		debug.SetGCPercent(old)
	}
	var bar *progressbar.ProgressBar
	opts.Progress = func(done, total int) {
		if bar == nil {
			bar = progress(total, "checking coinstallability")
		}
		if bar != nil {
			bar.Set(done)
		}
	}
	var list []opam.Package
	if pkg.Version == "" {
		list, err = revdeps.OfName(ctx, u, pkg.Name, opts)
	} else {
		list, err = revdeps.Of(ctx, u, pkg, opts)
	}
	if bar != nil {
		bar.Finish()
	}
	return list, err
}

// buildStamp names this build of kiln (its executable's size and time), so that the
// answers of another build, which may answer differently, are not reused.
func buildStamp() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	st, err := os.Stat(exe)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d-%d", st.Size(), st.ModTime().UnixNano())
}

// readAnswer reads a cached list of packages, one a line; ok is false when there is
// none (or it cannot be read).
func readAnswer(path string) (list []opam.Package, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	for line := range strings.Lines(string(data)) {
		p, ok := opam.ParsePackage(strings.TrimSuffix(line, "\n"))
		if !ok {
			return nil, false
		}
		list = append(list, p)
	}
	return list, true
}

func writeAnswer(w io.Writer, list []opam.Package) error {
	for _, p := range list {
		if _, err := fmt.Fprintln(w, p); err != nil {
			return err
		}
	}
	return nil
}

func opamDiffCmd() *cobra.Command {
	var f opamFlags
	var noLint bool
	c := &cobra.Command{
		Use:   "diff BASE HEAD",
		Short: "Classify what a pull request changes in an opam repository, and lint it",
		Long: `Merge HEAD into BASE (commits of the git repository --repo, no checkout needed), then
classify each changed package version: new-package, new-release, deleted, unavailable,
significant or insignificant (metadata only), list unexpected paths and lint findings.
Exit status 1 when the lint finds errors or paths are unexpected.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			res, err := prdiff.Analyse(ctx, gitDirOf(f.repo), args[0], args[1], nil, prdiff.Options{NoLint: noLint})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				for _, c := range res.Changes {
					fmt.Fprintf(out, "%-14s %s", c.Kind, c.Package)
					if len(c.Fields) > 0 {
						fmt.Fprintf(out, " (%s)", strings.Join(c.Fields, ", "))
					}
					fmt.Fprintln(out)
					for _, l := range c.Lint {
						fmt.Fprintf(out, "    %s\n", l)
					}
				}
				for _, p := range res.Problems {
					fmt.Fprintf(out, "%-14s %s\n", p.Reason, p.Message)
				}
				kinds := res.Counts()
				var parts []string
				for k, n := range kinds {
					parts = append(parts, fmt.Sprintf("%d %s", n, k))
				}
				slices.Sort(parts)
				fmt.Fprintf(out, "%d packages changed: %s\n", len(res.Changes), strings.Join(parts, ", "))
			}
			bad := res.Failed()
			for _, c := range res.Changes {
				for _, l := range c.Lint {
					bad = bad || l.Severity == lint.Error
				}
			}
			if bad {
				return errors.New("the pull request has lint errors or problems")
			}
			return nil
		},
	}
	f.addRepo(c)
	c.Flags().BoolVar(&f.json, "json", false, "print as JSON")
	c.Flags().BoolVar(&noLint, "no-lint", false, "skip the lint")
	return c
}
