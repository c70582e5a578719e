package baseimages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
)

// LocalRunner builds with a builder of this process (kiln images build, tests).
type LocalRunner struct{ Builder *builder.Builder }

// Build implements Runner.
func (r LocalRunner) Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error) {
	return r.Builder.Build(ctx, s, builder.BuildContext{Dir: contextDir}, log)
}

// Mount implements Runner.
func (r LocalRunner) Mount(id string) (string, func(), error) { return r.Builder.Store().Mount(id) }

// FleetRunner builds on the fleet's pools (plugins/fleetjob) and reads the results
// from the builder store of this machine's workers (the host's local workers):
// the fleet does not send snapshots back, so a build that ran on another machine
// cannot be exported here.
type FleetRunner struct {
	Fleet fleetjob.Fleet
	// Store is the local workers' builder snapshot store.
	Store *snapshot.Store
}

// Build implements Runner; log must be the engine job (*current.Job) of the build.
func (r FleetRunner) Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error) {
	j, ok := log.(*current.Job)
	if !ok {
		return "", fmt.Errorf("fleet build: not in an engine job")
	}
	res, err := fleetjob.Run(ctx, r.Fleet, j, fleetjob.Request{
		Ticket: "baseimages", Pool: pool, Client: "base-images", Spec: s.String(), SourceDir: contextDir,
		CacheHint: "base-images-" + pool, Timeout: 4 * time.Hour,
	})
	if err != nil {
		return "", err
	}
	if res.Snapshot == "" {
		return "", fmt.Errorf("fleet build %s: no snapshot", res.JobID)
	}
	return res.Snapshot, nil
}

// Mount implements Runner.
func (r FleetRunner) Mount(id string) (string, func(), error) {
	if _, ok, err := r.Store.Get(id); err != nil || !ok {
		return "", nil, current.Infra(current.FailWorkerLost, fmt.Errorf("snapshot %s is not in this machine's builder store %s (built by a worker elsewhere?)", id, r.Store.Root()))
	}
	return r.Store.Mount(id)
}

// Rootfs is the Debian root filesystem a build starts from.
type Rootfs struct {
	Name   string `json:"name"`
	ID     string `json:"id"`
	Recipe string `json:"recipe"`
}

// RootfsOf reads the root filesystem of o from the image store.
func RootfsOf(ctx context.Context, st *image.Store, o image.DebianOptions) (Rootfs, error) {
	name, err := o.LocalName()
	if err != nil {
		return Rootfs{}, err
	}
	b, err := st.Resolve(ctx, name)
	if err != nil {
		return Rootfs{}, fmt.Errorf("root filesystem %s: %w", name, err)
	}
	return Rootfs{Name: name, ID: b.ID, Recipe: o.Recipe()}, nil
}

// Make builds b on its pool from the root filesystem and the build context of an
// opam repository commit, and exports it. A compiler image needs its opam image's
// result (parent). An export already made of the same snapshot is reused.
func (e *Exporter) Make(ctx context.Context, log io.Writer, b Build, rfs Rootfs, cdir, commit string, date time.Time, parent *Built) (Built, error) {
	_, full := b.Specs(rfs.Name)
	in := Inputs{OpamCommit: commit, OpamDate: date, Rootfs: rfs.Name, RootfsID: rfs.ID, Recipe: rfs.Recipe, Spec: SpecDigest(full), Packages: b.Image.Packages}
	fmt.Fprintf(log, "building %s on %s from %s (%s), opam repository %s\n", b.Name(), b.Arch.Pool, rfs.Name, short(trimAlgo(rfs.ID)), short(commit))
	snap, err := e.Runner.Build(ctx, log, b.Arch.Pool, full, cdir)
	if err != nil {
		return Built{}, err
	}
	key := b.Name() + " " + snap + " " + fmt.Sprint(in)
	if parent != nil {
		key += " " + parent.Digest
	}
	sum := sha256.Sum256([]byte(key))
	memo := filepath.Join(e.Dir, "exports", hex.EncodeToString(sum[:16])+".json")
	if data, err := os.ReadFile(memo); err == nil {
		var out Built
		if json.Unmarshal(data, &out) == nil {
			if _, err := e.Image(out.Digest); err == nil {
				fmt.Fprintf(log, "%s: exported before as %s\n", b.Name(), out.Digest)
				return out, nil
			}
		}
	}
	start := time.Now()
	out, err := e.Export(ctx, b, snap, in, parent)
	if err != nil {
		return Built{}, err
	}
	fmt.Fprintf(log, "%s: exported as %s (%d MB compressed) in %s\n", b.Name(), out.Digest, out.Size>>20, time.Since(start).Round(time.Second))
	data, err := json.Marshal(out)
	if err != nil {
		return Built{}, err
	}
	if err := os.MkdirAll(filepath.Dir(memo), 0o755); err != nil {
		return Built{}, err
	}
	if err := os.WriteFile(memo, data, 0o644); err != nil {
		return Built{}, err
	}
	return out, nil
}

// BuildAll builds every build of plan, opam images first, from the opam repository
// at commit, without the engine (kiln images build, tests): the root filesystems are
// made in the image store st when missing (named with the distributions' release
// dates in releases, when given), the contexts kept under workDir.
func (e *Exporter) BuildAll(ctx context.Context, log io.Writer, st *image.Store, plan Plan, releases map[string]string, gitDir, commit, workDir string) (map[string]Built, error) {
	rootfsOf := func(b Build) image.DebianOptions { return b.Rootfs(releases[b.Image.Distro.Name]) }
	roots := map[string]Rootfs{}
	for _, b := range plan.Builds {
		o := rootfsOf(b)
		name, err := o.LocalName()
		if err != nil {
			return nil, err
		}
		if _, ok := roots[name]; ok {
			continue
		}
		// A root filesystem named by its release date is that release's: one in the
		// store is used as it is.
		if _, err := st.Resolve(ctx, name); err != nil || o.Name == "" {
			if _, err := st.EnsureDebian(ctx, o); err != nil {
				return nil, fmt.Errorf("root filesystem of %s: %w", b.Name(), err)
			}
		}
		r, err := RootfsOf(ctx, st, o)
		if err != nil {
			return nil, err
		}
		roots[name] = r
	}
	from := func(b Build) string { n, _ := b.Rootfs("").LocalName(); return n }
	cdir, date, err := OpamContext(ctx, gitDir, commit, filepath.Join(workDir, "contexts"), plan.Builds, from)
	if err != nil {
		return nil, err
	}
	out := map[string]Built{}
	for _, compilers := range []bool{false, true} {
		for _, b := range plan.Builds {
			if (b.Image.OCaml != "") != compilers {
				continue
			}
			var parent *Built
			if compilers {
				pb := out[b.opam().Name()]
				parent = &pb
			}
			name, _ := rootfsOf(b).LocalName()
			r, err := e.Make(ctx, log, b, roots[name], cdir, commit, date, parent)
			if err != nil {
				return nil, err
			}
			out[b.Name()] = r
		}
	}
	return out, nil
}

// opam is the build of the opam image a build's image is on (itself for an opam image).
func (b Build) opam() Build {
	b.Image.OCaml = ""
	return b
}
