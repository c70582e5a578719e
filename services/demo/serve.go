package demo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current/gitlocal"
	"github.com/kiln-ci/kiln/services/host"
)

// ServiceKind is the demonstration pipeline as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "demo",
	Help: "a demonstration pipeline: watches a local git repository and runs a few cached jobs per branch head",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.repo, "demo-repo", "", "git repository the demonstration pipeline watches (default: a sample made in the state dir)")
		fs.DurationVar(&s.poll, "demo-poll", 10*time.Second, "how often the demo reads the repository's branch heads, besides when they change")
		fs.DurationVar(&s.commitEvery, "demo-commit-every", 0, "add a commit to the sample repository this often, for a pipeline that keeps moving (0: never)")
		fs.StringVar(&s.runner, "demo-runner", "auto", "where demo jobs run: host, sandbox (the builder, with runc), or auto (sandbox when root, runc and --demo-image are available)")
		fs.StringVar(&s.image, "demo-image", "kiln/debian:bookworm", "base image of sandboxed demo jobs (make it with: kiln base debian)")
		return s
	},
}

// served is the demo configured by its flags, before it starts.
type served struct {
	repo, runner, image string
	poll, commitEvery   time.Duration
}

// Start checks the repository (or makes the sample) and picks where jobs run.
func (s *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	switch s.runner {
	case "host", "sandbox", "auto":
	default:
		return nil, fmt.Errorf("--demo-runner %q: want host, sandbox or auto", s.runner)
	}
	repo := s.repo
	sample := repo == ""
	if sample {
		repo = filepath.Join(env.StateDir, "demo", "sample")
		if err := CreateSample(ctx, repo); err != nil {
			return nil, err
		}
	} else if _, err := gitlocal.Read(ctx, repo); err != nil {
		return nil, fmt.Errorf("--demo-repo: %w", err)
	}
	runner, err := pickRunner(ctx, env.Logger, s.runner, env.StateDir, s.image)
	if err != nil {
		return nil, err
	}
	run := &host.Running{Pipeline: Pipeline(Options{Repo: repo, WorkDir: filepath.Join(env.StateDir, "demo"), Poll: s.poll, Runner: runner})}
	if sample && s.commitEvery > 0 {
		cctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(s.commitEvery)
			defer t.Stop()
			for {
				select {
				case <-cctx.Done():
					return
				case <-t.C:
					if err := CommitSample(cctx, repo); err != nil && cctx.Err() == nil {
						env.Logger.Warn("demo commit", "err", err)
					}
				}
			}
		}()
		run.Close = func() { stop(); wg.Wait() }
	}
	return run, nil
}

// pickRunner picks where the demo's jobs run.
func pickRunner(ctx context.Context, log *slog.Logger, mode, stateDir, img string) (Runner, error) {
	if mode == "host" {
		return HostRunner{}, nil
	}
	why := ""
	if os.Geteuid() != 0 {
		why = "not running as root"
	} else if _, err := exec.LookPath("runc"); err != nil {
		why = "runc is not installed"
	}
	var b *builder.Builder
	if why == "" {
		images, err := image.Open(filepath.Join(stateDir, "images"))
		if err == nil {
			if _, err = images.Resolve(ctx, img); err != nil && strings.HasPrefix(img, image.LocalPrefix) {
				err = fmt.Errorf("%w (make it with: kiln base debian --state-dir %s)", err, stateDir)
			}
		}
		if err == nil {
			b, err = builder.New(builder.Options{Root: filepath.Join(stateDir, "demo", "builder"), Images: images})
		}
		if err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		if mode == "sandbox" {
			return nil, fmt.Errorf("--demo-runner sandbox: %s", why)
		}
		log.Info("demo jobs run on the host", "why_not_sandboxed", why)
		return HostRunner{}, nil
	}
	log.Info("demo jobs run in the sandbox", "image", img)
	return SandboxRunner{Builder: b, Image: img}, nil
}
