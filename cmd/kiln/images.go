package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/services/baseimages"
)

// imagesFlags are the flags the images commands share.
type imagesFlags struct {
	config, stateDir string
}

func (f *imagesFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.config, "config", "", "the base-images configuration, a YAML file (default: Debian 12 and 13, their OCaml, amd64 and arm64, no registry; see docs/base-images.md)")
	c.Flags().StringVar(&f.stateDir, "state-dir", "var", "state folder (builder, image store, exported images and the index under base-images/)")
}

func (f *imagesFlags) load() (*baseimages.Config, error) {
	if f.config == "" {
		return baseimages.ParseConfig(nil)
	}
	return baseimages.LoadConfig(f.config)
}

func init() { addCommand(imagesCmd()) }

func imagesCmd() *cobra.Command {
	c := &cobra.Command{Use: "images", Short: "The base images (opam and OCaml images of a distro × compiler × architecture matrix): plan, build and publish once, list what is published"}
	c.AddCommand(imagesPlanCmd(), imagesBuildCmd(), imagesLsCmd())
	return c
}

func imagesPlanCmd() *cobra.Command {
	var f imagesFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "plan",
		Short: "Print the images each architecture builds and the tags they get",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load()
			if err != nil {
				return err
			}
			p := cfg.Plan()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			fmt.Fprint(cmd.OutOrStdout(), p.String())
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}

func imagesBuildCmd() *cobra.Command {
	var f imagesFlags
	var opamGit, commit string
	var noPublish bool
	c := &cobra.Command{
		Use:   "build",
		Short: "Build every image of the plan with this machine's builder (other architectures under qemu), then publish what changed when a registry is configured",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := f.load()
			if err != nil {
				return err
			}
			if opamGit == "" {
				opamGit = cfg.OpamRepository.Git
			}
			if opamGit == "" {
				return fmt.Errorf("no opam repository: give --opam-repository or opam-repository.git in the configuration")
			}
			if commit == "" {
				if commit, err = revParse(ctx, opamGit, cfg.OpamRepository.Branch); err != nil {
					return err
				}
			}
			st, err := image.Open(filepath.Join(f.stateDir, "images"))
			if err != nil {
				return err
			}
			st.Progress = image.NewProgress(os.Stderr)
			b, err := builder.New(builder.Options{Root: filepath.Join(f.stateDir, "builder"), Images: st})
			if err != nil {
				return err
			}
			work := filepath.Join(f.stateDir, "base-images")
			exp := &baseimages.Exporter{Dir: filepath.Join(work, "export"), Runner: baseimages.LocalRunner{Builder: b}}
			plan := cfg.Plan()
			built, err := exp.BuildAll(ctx, os.Stderr, st, plan, nil, opamGit, commit, work)
			if err != nil {
				return err
			}
			for _, bd := range plan.Builds {
				bt := built[bd.Name()]
				fmt.Fprintf(cmd.OutOrStdout(), "%-32s %s %4d MB\n", bt.Name, bt.Digest, bt.Size>>20)
			}
			if noPublish || cfg.Registry.Repository == "" {
				return nil
			}
			pub, err := baseimages.NewPublisher(cfg.Registry, nil, nil)
			if err != nil {
				return err
			}
			pub.Exporter = exp
			ixf := &baseimages.IndexFile{Path: filepath.Join(work, "index.json")}
			old, err := ixf.Load()
			if err != nil {
				return err
			}
			rep, err := pub.Publish(ctx, os.Stderr, plan, built, old)
			if err != nil {
				return err
			}
			old.Repository = cfg.Registry.Repository
			old.Update(plan, built, rep)
			fmt.Fprintf(cmd.OutOrStdout(), "published to %s: %d images pushed (%d there already), %d tags moved, %d unchanged, %d deprecated\n",
				cfg.Registry.Repository, len(rep.Pushed), len(rep.Present), len(rep.Tags), len(rep.Unchanged), len(rep.Deprecated))
			return ixf.Save(old)
		},
	}
	f.add(c)
	c.Flags().StringVar(&opamGit, "opam-repository", "", "git directory of the opam repository (default: opam-repository.git of the configuration)")
	c.Flags().StringVar(&commit, "commit", "", "commit of the opam repository to copy into the images (default: the head of the configured branch)")
	c.Flags().BoolVar(&noPublish, "no-publish", false, "build only, even when a registry is configured")
	return c
}

func revParse(ctx context.Context, gitDir, branch string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "rev-parse", "--verify", branch+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("opam repository %s: branch %s: %w", gitDir, branch, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func imagesLsCmd() *cobra.Command {
	var f imagesFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the published tags: digest per architecture, size, when each last changed, deprecation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ix, err := (&baseimages.IndexFile{Path: filepath.Join(f.stateDir, "base-images", "index.json")}).Load()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(ix)
			}
			for _, e := range ix.Sorted() {
				var arches []string
				for _, a := range sortedArchKeys(e.Arches) {
					arches = append(arches, fmt.Sprintf("%s=%.12s(%dMB)", a, strings.TrimPrefix(e.Arches[a].Digest, "sha256:"), e.Arches[a].Size>>20))
				}
				note := ""
				if e.Deprecated != "" {
					note = "  DEPRECATED: " + e.Deprecated
				}
				fmt.Fprintf(out, "%-28s %.19s  %s  changed %s%s\n", e.Name, e.Digest, strings.Join(arches, " "), e.Changed.Format("2006-01-02 15:04"), note)
			}
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the index as JSON")
	return c
}

func sortedArchKeys(m map[string]baseimages.ArchEntry) []string {
	return slices.Sorted(maps.Keys(m))
}
