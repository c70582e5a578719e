package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/builder/spec"
)

// builderFlags are the flags shared by `kiln build` and `kiln store`.
type builderFlags struct {
	stateDir string
	root     string
	driver   string
}

func (f *builderFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.stateDir, "state-dir", "var", "state folder (base images in its images/, the builder in its builder/)")
	c.Flags().StringVar(&f.root, "root", "", "builder root (default <state-dir>/builder)")
	c.Flags().StringVar(&f.driver, "store", "", "snapshot store driver: overlay or copy (default: overlay where it works)")
}

func (f *builderFlags) open(o builder.Options) (*builder.Builder, error) {
	images, err := image.Open(filepath.Join(f.stateDir, "images"))
	if err != nil {
		return nil, err
	}
	images.Progress = image.NewProgress(os.Stderr)
	o.Root = f.root
	if o.Root == "" {
		o.Root = filepath.Join(f.stateDir, "builder")
	}
	o.Driver = snapshot.Driver(f.driver)
	o.Images = images
	return builder.New(o)
}

// parseSize reads a byte count with an optional K, M, G or T suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	return int64(n * float64(mult)), nil
}

func init() {
	var (
		bf         builderFlags
		file       string
		contextDir string
		secrets    []string
		backend    string
		printOnly  bool
		buildKit   bool
		memory     string
		cpus       float64
		pids       int64
		timeout    time.Duration
	)
	c := &cobra.Command{
		Use:   "build -f SPEC",
		Short: "Build an OBuilder spec in sandboxed, cached steps",
		Long: `Build runs the steps of an OBuilder spec (S-expression) one by one, each in a runc
sandbox on top of the snapshot of the step before. A step that ran before is not run
again: its snapshot is reused and its log replayed. The log starts with an equivalent
Dockerfile (to reproduce the build locally) and ends with the final snapshot id, which
is also the only line printed on standard output.`,
		Example: `  kiln base debian --suite bookworm
  kiln build -f example.spec --context . --secret token=./token.txt
  kiln build -f example.spec --print-dockerfile > Dockerfile
  kiln build -f example.spec --print-dockerfile --buildkit > Dockerfile`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("no spec given (-f SPEC)")
			}
			text, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			s, err := spec.Parse(file, text)
			if err != nil {
				return err
			}
			if printOnly {
				fmt.Print(s.Dockerfile(spec.DockerfileOptions{BuildKit: buildKit}))
				return nil
			}
			secretValues := map[string][]byte{}
			for _, kv := range secrets {
				id, path, ok := strings.Cut(kv, "=")
				if !ok || id == "" || path == "" {
					return fmt.Errorf("--secret %q: want ID=FILE", kv)
				}
				v, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("--secret %s: %w", id, err)
				}
				secretValues[id] = v
			}
			mem, err := parseSize(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			ctx, cancel := signalContext()
			defer cancel()
			switch backend {
			case "runc":
				b, err := bf.open(builder.Options{
					Limits:      sandbox.Limits{Memory: mem, CPUs: cpus, Pids: pids},
					StepTimeout: timeout,
				})
				if err != nil {
					return err
				}
				id, err := b.Build(ctx, s, builder.BuildContext{Dir: contextDir, Secrets: secretValues}, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Println(id)
			case "docker":
				images, err := image.Open(filepath.Join(bf.stateDir, "images"))
				if err != nil {
					return err
				}
				images.Progress = image.NewProgress(os.Stderr)
				r, err := docker.NewRunner(&docker.Engine{}, images, filepath.Join(bf.stateDir, "docker-logs"))
				if err != nil {
					return err
				}
				res, err := r.Build(ctx, s, docker.Options{Context: contextDir, Secrets: secretValues, Log: os.Stderr})
				if err != nil {
					return err
				}
				fmt.Println(res.ID)
			default:
				return fmt.Errorf("--backend %q: want runc or docker", backend)
			}
			return nil
		},
	}
	bf.add(c)
	f := c.Flags()
	f.StringVarP(&file, "file", "f", "", "the spec file")
	f.StringVar(&contextDir, "context", ".", "directory (copy …) reads from")
	f.StringArrayVar(&secrets, "secret", nil, "secret value for steps: ID=FILE (repeatable)")
	f.StringVar(&backend, "backend", "runc", "runc or docker")
	f.BoolVar(&printOnly, "print-dockerfile", false, "print the equivalent Dockerfile (for the classic builder) and stop")
	f.BoolVar(&buildKit, "buildkit", false, "with --print-dockerfile: the BuildKit form (RUN --mount for caches and secrets, --network)")
	f.StringVar(&memory, "memory", "", "memory limit of each step (e.g. 4G)")
	f.Float64Var(&cpus, "cpus", 0, "CPU limit of each step, in CPUs")
	f.Int64Var(&pids, "pids", 0, "process limit of each step")
	f.DurationVar(&timeout, "timeout", 0, "time limit of each step (e.g. 2h)")
	addCommand(c)
}
