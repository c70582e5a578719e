package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/builder/image"
)

// baseStateDir is the state folder of `kiln base`; the image store is its images/.
var baseStateDir string

func openImages() (*image.Store, error) {
	st, err := image.Open(filepath.Join(baseStateDir, "images"))
	if err != nil {
		return nil, err
	}
	st.Progress = image.NewProgress(os.Stderr)
	return st, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func init() {
	base := &cobra.Command{
		Use:   "base",
		Short: "Make, pull and list the base images of builds ((from …) in specs)",
		Long: `Base images are the (from REF) of build specs. REF is one of:
  kiln/NAME[:TAG]      a local base made by "kiln base debian" or "kiln base import"
  /path/rootfs.tar[.gz|.zst|.xz]  a root filesystem tarball (also ./…, ../…, file:…)
  anything else        an OCI/Docker image pulled from its registry (cached by digest)`,
	}
	base.PersistentFlags().StringVar(&baseStateDir, "state-dir", "var", "state folder (the image store is its images/ folder)")

	var o image.DebianOptions
	var packages string
	debian := &cobra.Command{
		Use:   "debian",
		Short: "Make a Debian root filesystem with mmdebstrap and register it as a local base",
		Example: `  kiln base debian --suite bookworm
  kiln base debian --suite bookworm --packages ocaml-nox,opam,dune --name kiln/debian:bookworm-ocaml
  kiln base debian --suite bookworm --arch arm64   # needs qemu-user-static and binfmt-support`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if packages != "" {
				for _, p := range strings.Split(packages, ",") {
					if p = strings.TrimSpace(p); p != "" {
						o.Packages = append(o.Packages, p)
					}
				}
			}
			st, err := openImages()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			b, err := st.MakeDebian(ctx, o)
			if err != nil {
				return err
			}
			name, _ := o.LocalName()
			fmt.Printf("%s\t%s\n", name, b.ID)
			return nil
		},
	}
	debian.Flags().StringVar(&o.Suite, "suite", "bookworm", "Debian suite")
	debian.Flags().StringVar(&o.Arch, "arch", "", "Debian architecture (default: the host's)")
	debian.Flags().StringVar(&o.Variant, "variant", "minbase", "mmdebstrap variant (minbase, apt, required, …)")
	debian.Flags().StringVar(&packages, "packages", "", "extra packages, comma-separated")
	debian.Flags().StringVar(&o.Mirror, "mirror", image.DefaultMirror, "Debian mirror")
	debian.Flags().StringVar(&o.Name, "name", "", "local name (default kiln/debian:SUITE[-ARCH][-VARIANT][-DIGEST of packages])")

	importCmd := &cobra.Command{
		Use:   "import NAME FILE|-",
		Short: "Register a root filesystem tarball (plain, gzip, zstd or xz; - for stdin) as a local base",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openImages()
			if err != nil {
				return err
			}
			in := os.Stdin
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			ctx, cancel := signalContext()
			defer cancel()
			b, err := st.Import(ctx, args[0], in, image.Config{})
			if err != nil {
				return err
			}
			name, _ := image.LocalName(args[0])
			fmt.Printf("%s\t%s\n", name, b.ID)
			return nil
		},
	}

	var arch string
	var insecure bool
	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an OCI/Docker image from its registry into the image store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openImages()
			if err != nil {
				return err
			}
			if arch != "" {
				st.Arch = arch
			}
			st.Insecure = insecure
			ctx, cancel := signalContext()
			defer cancel()
			b, err := st.Pull(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\n", args[0], b.ID)
			return nil
		},
	}
	pull.Flags().StringVar(&arch, "arch", "", "architecture of multi-architecture images (default: the host's)")
	pull.Flags().BoolVar(&insecure, "insecure", false, "allow a plain-HTTP registry")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the stored bases and the names that refer to them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openImages()
			if err != nil {
				return err
			}
			bases, names, err := st.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tARCH\tSIZE\tCREATED\tNAMES")
			for _, b := range bases {
				fmt.Fprintf(w, "%s\t%s\t%d MiB\t%s\t%s\n", strings.TrimPrefix(b.ID, "sha256:")[:12], b.Config.Arch,
					b.Size>>20, b.Created.Format("2006-01-02 15:04"), strings.Join(names[b.ID], " "))
			}
			return w.Flush()
		},
	}

	rm := &cobra.Command{
		Use:   "rm ID|NAME…",
		Short: "Remove bases (by id, id prefix or any name that refers to them)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openImages()
			if err != nil {
				return err
			}
			bases, names, err := st.List()
			if err != nil {
				return err
			}
			for _, a := range args {
				var match []string
				for _, b := range bases {
					hex := strings.TrimPrefix(b.ID, "sha256:")
					hit := b.ID == a || (len(a) >= 6 && strings.HasPrefix(hex, a))
					for _, n := range names[b.ID] {
						if n == a || n == "oci:"+a || strings.HasPrefix(n, "oci:"+a+"#") || n == "file:"+a {
							hit = true
						}
						if ln, err := image.LocalName(a); err == nil && strings.HasPrefix(a, image.LocalPrefix) && n == ln {
							hit = true
						}
					}
					if hit {
						match = append(match, b.ID)
					}
				}
				if len(match) != 1 {
					return fmt.Errorf("%s: matches %d bases", a, len(match))
				}
				if err := st.Remove(match[0]); err != nil {
					return err
				}
				fmt.Println("removed", match[0])
			}
			return nil
		},
	}
	var output string
	export := &cobra.Command{
		Use:   "export REF",
		Short: "Write a base as a Docker image archive, tagged REF, for docker load",
		Long: `Export writes the base REF names (a local kiln/… base, a pulled image or a tarball) as a
Docker image archive: what "docker save" writes and "docker load" reads, with the tag REF
for local names and registry tags. The Dockerfiles of build logs ("to reproduce locally")
then find their FROM.`,
		Example: `  kiln base export kiln/debian:bookworm | docker load
  kiln base export kiln/debian:bookworm -o bookworm.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openImages()
			if err != nil {
				return err
			}
			out := os.Stdout
			if output != "" && output != "-" {
				f, err := os.Create(output)
				if err != nil {
					return err
				}
				defer f.Close()
				out = f
			} else if isatty.IsTerminal(out.Fd()) {
				return fmt.Errorf("export %s: standard output is a terminal; pipe it to docker load or give -o FILE", args[0])
			}
			ctx, cancel := signalContext()
			defer cancel()
			if err := st.ExportDocker(ctx, args[0], out); err != nil {
				if output != "" && output != "-" {
					os.Remove(output)
				}
				return err
			}
			return out.Close()
		},
	}
	export.Flags().StringVarP(&output, "output", "o", "", "write the archive to FILE instead of standard output")
	base.AddCommand(debian, importCmd, pull, ls, rm, export)
	addCommand(base)
}
