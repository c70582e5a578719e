package deployer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/registry"
)

// SpecRunner builds the builder specs of services built with a spec (one build per
// architecture) and reads their results.
type SpecRunner interface {
	// Build builds s on pool with contextDir as its context, writing the log to log
	// (the engine job of the build, when it runs in one), and returns the snapshot of
	// the result.
	Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error)
	// Mount gives a snapshot's root filesystem until release is called.
	Mount(id string) (dir string, release func(), err error)
}

// LocalBuilder builds with a builder of this process: every architecture on this
// machine, others under qemu (binfmt_misc), whatever the pool.
type LocalBuilder struct{ Builder *builder.Builder }

// Build implements SpecRunner.
func (l LocalBuilder) Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error) {
	return l.Builder.Build(ctx, s, builder.BuildContext{Dir: contextDir}, log)
}

// Mount implements SpecRunner.
func (l LocalBuilder) Mount(id string) (string, func(), error) { return l.Builder.Store().Mount(id) }

// FleetBuilder builds on the fleet's pool of each architecture and reads the results
// from the builder store of this machine's workers (the host's local workers): the
// fleet does not send snapshots back, so a build that ran on another machine cannot
// be published from here.
type FleetBuilder struct {
	Fleet fleetjob.Fleet
	// Store is the local workers' builder snapshot store.
	Store *snapshot.Store
}

// Build implements SpecRunner; log must be the engine job of the build.
func (f FleetBuilder) Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error) {
	j, ok := log.(*current.Job)
	if !ok {
		return "", errors.New("fleet build: not in an engine job (the deployer's steps are engine jobs only under kiln serve)")
	}
	res, err := fleetjob.Run(ctx, f.Fleet, j, fleetjob.Request{Ticket: "deployer", Pool: pool, Client: "deployer", Spec: s.String(),
		SourceDir: contextDir, Urgent: true, Timeout: time.Hour})
	if err != nil {
		return "", err
	}
	if res.Snapshot == "" {
		return "", fmt.Errorf("fleet build %s: no snapshot", res.JobID)
	}
	return res.Snapshot, nil
}

// Mount implements SpecRunner.
func (f FleetBuilder) Mount(id string) (string, func(), error) {
	if _, ok, err := f.Store.Get(id); err != nil || !ok {
		return "", nil, current.Infra(current.FailWorkerLost, fmt.Errorf("snapshot %s is not in this machine's builder store %s (built by a worker elsewhere?)", id, f.Store.Root()))
	}
	return f.Store.Mount(id)
}

// ociArch maps Debian architecture names to OCI (GOARCH) names.
var ociArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

// buildSpec builds the spec of svc in ctxDir for each of its architectures, each in an
// engine job of its own on the architecture's pool, at the same time, and returns the
// snapshot of each.
func (d *Deployer) buildSpec(ctx context.Context, svc *ServiceConfig, commit, ctxDir string, log io.Writer) (map[string]string, error) {
	text, err := os.ReadFile(filepath.Join(ctxDir, svc.Spec))
	if err != nil {
		return nil, fmt.Errorf("no %s in %s at %s", svc.Spec, svc.Context, short(commit))
	}
	base, err := spec.Parse(svc.Spec, text)
	if err != nil {
		return nil, err
	}
	if d.o.Specs == nil {
		return nil, errors.New("no builder for specs: kiln serve builds them on its fleet")
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	snaps := map[string]string{}
	errs := make([]error, len(svc.Archs))
	for i, arch := range svc.Archs {
		s := *base
		if f := svc.From[arch]; f != "" {
			s.From = f
		}
		pool := archPools[arch]
		fmt.Fprintf(log, "%s: building on %s from %s\n", arch, pool, s.From)
		wg.Go(func() {
			start := time.Now()
			job, err := d.runInJob(ctx, OpBuildArch, svc.Name, fmt.Sprintf("build %s %s for %s", svc.Name, short(commit), arch), true,
				func(ctx context.Context, log io.Writer) error {
					snap, err := d.o.Specs.Build(ctx, log, pool, &s, ctxDir)
					if err == nil {
						mu.Lock()
						snaps[arch] = snap
						mu.Unlock()
					}
					return err
				})
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", arch, err)
			}
			mu.Lock()
			fmt.Fprintf(log, "%s: built in %s (job %s): %s\n", arch, time.Since(start).Round(100*time.Millisecond), job, cmp.Or(snaps[arch], fmt.Sprint(err)))
			mu.Unlock()
		})
	}
	wg.Wait()
	return snaps, errors.Join(errs...)
}

// specBuilt reports whether every snapshot of a spec's build is still there.
func (d *Deployer) specBuilt(b *Build) bool {
	if d.o.Specs == nil || len(b.Snapshots) == 0 {
		return false
	}
	for _, id := range b.Snapshots {
		_, release, err := d.o.Specs.Mount(id)
		if err != nil {
			return false
		}
		release()
	}
	return true
}

// publishSpec makes the image of each architecture from its snapshot's image_root,
// pushes them, then their index, and returns the index's digest.
func (d *Deployer) publishSpec(ctx context.Context, cfg *Config, svc *ServiceConfig, b *Build, log io.Writer) (string, error) {
	c, err := d.registryClient(cfg)
	if err != nil {
		return "", err
	}
	repo := cfg.Registry.Address + "/" + svc.Image
	var ms []registry.Manifest
	for _, arch := range slices.Sorted(maps.Keys(b.Snapshots)) {
		h, err := d.pushArch(ctx, c, repo, svc, b, arch)
		if err != nil {
			return "", fmt.Errorf("push %s (%s): %w", svc.Image, arch, err)
		}
		fmt.Fprintf(log, "%s: pushed %s\n", arch, h)
		ms = append(ms, registry.Manifest{Digest: h, Platform: v1.Platform{OS: "linux", Architecture: ociArch[arch]}})
	}
	h, err := c.PushIndex(ctx, repo, ms, map[string]string{"org.opencontainers.image.revision": b.Commit})
	if err != nil {
		return "", fmt.Errorf("push %s: index: %w", svc.Image, err)
	}
	return h.String(), nil
}

// pushArch assembles the image of one architecture and pushes it.
func (d *Deployer) pushArch(ctx context.Context, c *registry.Client, repo string, svc *ServiceConfig, b *Build, arch string) (v1.Hash, error) {
	dir, release, err := d.o.Specs.Mount(b.Snapshots[arch])
	if err != nil {
		return v1.Hash{}, err
	}
	defer release()
	ic := svc.ImageConfig
	cfg := registry.ImageConfig{Architecture: ociArch[arch], Env: ic.Env, WorkingDir: ic.WorkingDir, User: ic.User, Entrypoint: ic.Entrypoint, Cmd: ic.Cmd,
		Labels:  map[string]string{"org.opencontainers.image.revision": b.Commit, "org.opencontainers.image.source": svc.Repo},
		History: "kiln deployer " + svc.Name + " " + b.Commit + " (" + svc.Spec + ", " + arch + ")"}
	a, err := registry.Assemble(ctx, registry.Rootfs{Dir: filepath.Join(dir, svc.ImageRoot)}, cfg, registry.AssembleOptions{TempDir: d.o.StateDir})
	if err != nil {
		return v1.Hash{}, err
	}
	defer a.Close()
	return c.Push(ctx, repo, a.Image)
}
