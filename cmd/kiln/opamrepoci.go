package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/opamrepoci"
)

// opamRepoCIFlags are the flags the opam-repo-ci commands share.
type opamRepoCIFlags struct {
	repo, base, config string
}

func (f *opamRepoCIFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.repo, "repo", ".", "the opam repository's git repository (a clone, bare or not)")
	c.Flags().StringVar(&f.base, "base", "", "the branch pull requests merge into (default: the repository's default branch)")
	c.Flags().StringVar(&f.config, "config", "", "the job matrix, a YAML file (default: Debian 12 amd64 and arm64; see docs/opam-repo-ci.md)")
}

func (f *opamRepoCIFlags) load() (*opamrepoci.Config, error) {
	if f.config == "" {
		return opamrepoci.Default(), nil
	}
	return opamrepoci.Load(f.config)
}

// baseBranch is --base, or the branch HEAD names in the repository.
func (f *opamRepoCIFlags) baseBranch(ctx context.Context, gitDir string) (string, error) {
	if f.base != "" {
		return f.base, nil
	}
	out, err := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "symbolic-ref", "--short", "HEAD").Output()
	if err != nil {
		return "", fmt.Errorf("%s: no default branch (HEAD names none); give --base", gitDir)
	}
	return strings.TrimSpace(string(out)), nil
}

func init() {
	c := &cobra.Command{Use: "opam-repo-ci", Short: "CI for pull requests to an opam repository: plan a pull request's jobs, reproduce one"}
	c.AddCommand(opamRepoCIPlanCmd(), opamRepoCIReproCmd())
	addCommand(c)
}

func opamRepoCIPlanCmd() *cobra.Command {
	var f opamRepoCIFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "plan BRANCH",
		Short: "Print the analysis, lint and job tree of a branch as a pull request, without building",
		Long: `Merge BRANCH into the base branch, classify each changed package, lint it, and print the
jobs opam-repo-ci would run: per changed package, a tree of groups (compilers, distributions,
architectures, opam-versions), platforms and jobs (build, tests, lower-bounds, revdeps). Each
job's name (its tree path joined with commas) is what 'kiln opam-repo-ci repro' takes.
Exit status 1 when the pull request cannot be tested as it stands or its lint fails.`,
		Example: `  kiln opam-repo-ci plan --repo ~/opam-repository my-release
  kiln opam-repo-ci plan --repo ~/opam-repository --base master --json my-release`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := f.load()
			if err != nil {
				return err
			}
			gitDir := gitDirOf(f.repo)
			base, err := f.baseBranch(ctx, gitDir)
			if err != nil {
				return err
			}
			baseID, err := repository.ResolveCommit(ctx, gitDir, base)
			if err != nil {
				return fmt.Errorf("base %s: %w", base, err)
			}
			head, err := repository.ResolveCommit(ctx, gitDir, args[0])
			if err != nil {
				return fmt.Errorf("branch %s: %w", args[0], err)
			}
			res, err := opamrepoci.Analyse(ctx, gitDir, baseID, head, nil)
			if err != nil {
				return err
			}
			p, err := (&opamrepoci.Planner{Config: cfg}).Plan(ctx, res)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, p); err != nil {
					return err
				}
			} else {
				printPlan(out, args[0], base, p)
			}
			switch {
			case p.Failed():
				return errors.New("the pull request cannot be tested as it stands")
			case !p.Lint.Passed():
				return errors.New("the lint failed")
			}
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}

// printPlan prints the analysis, the lint and the job tree.
func printPlan(w io.Writer, branch, base string, p *opamrepoci.Plan) {
	a := p.Analysis
	fmt.Fprintf(w, "%s (%.12s) merged into %s (%.12s)\n\nanalysis:\n", branch, a.Head, base, a.Base)
	for _, c := range a.Changes {
		fmt.Fprintf(w, "  %-14s %s", c.Kind, c.Package)
		var notes []string
		if c.HasTests {
			notes = append(notes, "has tests")
		}
		if len(c.Fields) > 0 {
			notes = append(notes, "changed: "+strings.Join(c.Fields, ", "))
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(notes, "; "))
		}
		fmt.Fprintln(w)
	}
	for _, pr := range a.Problems {
		fmt.Fprintf(w, "  FAILED %s\n", pr)
	}
	fmt.Fprintf(w, "\nlint:\n")
	for _, l := range strings.Split(strings.TrimRight(p.Lint.Text(), "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if p.Failed() {
		fmt.Fprintf(w, "\nno jobs: the pull request cannot be tested as it stands\n")
		return
	}
	counts := p.Counts()
	var parts []string
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	fmt.Fprintf(w, "\njobs: %d (%s), %d skipped\n", len(p.Jobs), strings.Join(parts, ", "), len(p.Skipped))
	var walk func(ns []*opamrepoci.Node, depth int)
	walk = func(ns []*opamrepoci.Node, depth int) {
		for _, n := range ns {
			line := strings.Repeat("  ", depth+1) + n.Label
			if n.Job != nil {
				line = fmt.Sprintf("%-40s %s", line, n.Job.ID())
				if n.Job.AcceptFailure {
					line += "  (failure accepted)"
				}
				if n.Job.Background {
					line += "  (background)"
				}
			}
			fmt.Fprintln(w, line)
			walk(n.Children, depth+1)
		}
	}
	walk(p.Tree(), 0)
	for _, s := range p.Skipped {
		fmt.Fprintf(w, "  skipped %s: %s\n", strings.Join(s.Path, ","), s.Reason)
	}
}

// commitURL matches the tail of a job's page: …/github/OWNER/REPO/commit/HASH/variant/ID.
var commitURL = regexp.MustCompile(`(?:/(github|gitea)/([^/]+)/([^/]+))?/commit/([0-9a-f]{7,64})/variant/([^/?#]+)$`)

func opamRepoCIReproCmd() *cobra.Command {
	var f opamRepoCIFlags
	var cloneURL string
	c := &cobra.Command{
		Use:   "repro JOB",
		Short: "Print the commands that reproduce a job locally",
		Long: `Print the shell commands that reproduce a job of a pull request on your machine: clone,
merge into the base, write the job's builder spec and build it with kiln (or Docker). They are
also the first lines of the job's log.

JOB is the head and the job's name: REF:PACKAGE,GROUP,LABEL,KIND[,REVDEP] (REF a branch or
commit of --repo), or the address of the job's page (…/commit/HASH/variant/NAME).`,
		Example: `  kiln opam-repo-ci repro --repo ~/opam-repository my-release:foo.1.0,compilers,4.13,tests
  kiln opam-repo-ci repro https://ci.example.org/github/ocaml/opam-repository/commit/0123abcd/variant/foo.1.0,compilers,4.13,build`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := f.load()
			if err != nil {
				return err
			}
			src, id, err := f.reproSource(ctx, args[0], cloneURL, cmd.Flags().Changed("repo"))
			if err != nil {
				return err
			}
			j, err := cfg.ParseJob(id)
			if err != nil {
				return err
			}
			text, err := (&opamrepoci.Specs{Config: cfg}).Repro(src, j)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), text)
			return nil
		},
	}
	f.add(c)
	c.Flags().StringVar(&cloneURL, "clone-url", "", "the repository to clone in the commands (default: --repo's origin, or the forge's from a page address)")
	return c
}

// reproSource reads a JOB argument into the source to check out and the job's name.
func (f *opamRepoCIFlags) reproSource(ctx context.Context, job, cloneURL string, haveRepo bool) (opamrepoci.Source, string, error) {
	var src opamrepoci.Source
	if m := commitURL.FindStringSubmatch(job); m != nil {
		src.Head, src.HeadRef = m[4], m[4]
		if m[1] == "github" && cloneURL == "" {
			cloneURL = "https://github.com/" + m[2] + "/" + m[3] + ".git"
		}
		src.CloneURL = cloneURL
		if !haveRepo {
			branch := f.base
			if branch == "" {
				branch = "master"
			}
			src.Base = "origin/" + branch
			if src.CloneURL == "" {
				return src, "", fmt.Errorf("%s: no repository to clone: give --clone-url or --repo", job)
			}
			return src, m[5], nil
		}
		job = m[4] + ":" + m[5]
	}
	ref, id, ok := strings.Cut(job, ":")
	if !ok {
		return src, "", fmt.Errorf("job %q: want REF:PACKAGE,GROUP,LABEL,KIND[,REVDEP] or a job page's address", job)
	}
	gitDir := gitDirOf(f.repo)
	head, err := repository.ResolveCommit(ctx, gitDir, ref)
	if err != nil {
		return src, "", fmt.Errorf("job %q: %s: %w", job, ref, err)
	}
	base, err := f.baseBranch(ctx, gitDir)
	if err != nil {
		return src, "", err
	}
	if src.Base, err = repository.ResolveCommit(ctx, gitDir, base); err != nil {
		return src, "", fmt.Errorf("base %s: %w", base, err)
	}
	src.Head = head
	if src.HeadRef == "" {
		src.HeadRef = ref
	}
	if src.CloneURL = cloneURL; src.CloneURL == "" {
		out, err := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "config", "remote.origin.url").Output()
		if src.CloneURL = strings.TrimSpace(string(out)); err != nil || src.CloneURL == "" {
			src.CloneURL = gitDir
		}
	}
	return src, id, nil
}
