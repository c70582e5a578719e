// Package builder runs build specs (the OBuilder language of builder/spec) step by step in
// sandboxes, keeping each step's result as a snapshot so that a step that ran before is
// not run again: its snapshot is reused and its stored log replayed.
//
// Layout of a builder root (see docs/builder.md):
//
//	store/snapshots/<id>/   one step: fs/ (its overlay layer or full tree), meta.json, log
//	store/tmp/              steps in progress (removed after a crash)
//	caches/store/           versions of the named caches (a snapshot store)
//	caches/<name>.current   the current version of cache <name>
//	leases/                 snapshots in use by running builds, one file per build
//	images/                 base images (builder/image)
//	runc/                   sandbox state
package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/builder/spec"
	"golang.org/x/sys/unix"
)

// Options configure a Builder.
type Options struct {
	// Root is the builder's directory (store, caches, sandbox state).
	Root string
	// Driver is the snapshot store's driver; "" picks overlay where it works.
	Driver snapshot.Driver
	// Images resolves (from …); nil opens the image store under Root/images.
	Images *image.Store
	// Limits apply to every run step. A zero field takes its default (DefaultLimits); a
	// negative one is unlimited.
	Limits sandbox.Limits
	// NewPrivileges lets setuid programs (sudo, su) gain privileges inside steps; by
	// default steps run with no_new_privs.
	NewPrivileges bool
	// IDs are the host ids the steps' user namespace maps to; zero takes the
	// subordinate ids of the user "kiln" in /etc/subuid and /etc/subgid, claiming 65536
	// free ones there when it has none. On a kernel that cannot shift the store's files
	// (idmapped mounts under overlayfs, Linux 5.19) steps run without a user namespace,
	// as the host's root (logged at start).
	IDs sandbox.IDRange
	// StepTimeout ends a run step that takes longer (0: no limit).
	StepTimeout time.Duration
	// MinFree is the free space (bytes) below which a failed step is blamed on a full
	// disk, and which garbage collection keeps. Default 256 MiB.
	MinFree int64
}

// Builder runs specs. It is safe for concurrent builds, and several processes may share
// one root.
type Builder struct {
	opts  Options
	root  string
	store *snapshot.Store
	// cacheStore keeps the versions of named caches.
	cacheStore *snapshot.Store
	images     *image.Store
	sandbox    *sandbox.Runc
	// sandboxErr says why there is no sandbox.
	sandboxErr error
	flights    flights
	counts     counters
}

// BuildContext is what a build reads besides its spec.
type BuildContext struct {
	// Dir is the directory (copy …) reads from; "" means there is none.
	Dir string
	// Secrets holds the value of each secret id that steps may ask for. Values never
	// enter logs or step ids.
	Secrets map[string][]byte
}

// New opens (creating it if needed) a builder rooted at opts.Root.
func New(opts Options) (*Builder, error) {
	if opts.Root == "" {
		return nil, errors.New("builder: no root directory given")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, err
	}
	if opts.MinFree == 0 {
		opts.MinFree = 256 << 20
	}
	opts.Limits = withDefaults(opts.Limits, DefaultLimits(root))
	for _, d := range []string{"caches", "leases"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("builder: %w", err)
		}
	}
	st, err := snapshot.Open(filepath.Join(root, "store"), opts.Driver)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	caches, err := snapshot.Open(filepath.Join(root, "caches", "store"), st.Driver())
	if err != nil {
		return nil, fmt.Errorf("builder: caches: %w", err)
	}
	images := opts.Images
	if images == nil {
		if images, err = image.Open(filepath.Join(root, "images")); err != nil {
			return nil, fmt.Errorf("builder: %w", err)
		}
	}
	b := &Builder{opts: opts, root: root, store: st, cacheStore: caches, images: images}
	// Without runc the store can still be listed and collected; run steps fail.
	if b.sandbox, err = sandbox.NewRunc(filepath.Join(root, "runc")); err != nil {
		b.sandboxErr = err
	} else {
		b.setupSandbox()
	}
	l := opts.Limits
	slog.Info("builder: step limits", "root", root, "memory", l.Memory, "cpus", l.CPUs, "pids", l.Pids, "disk", l.Disk)
	return b, nil
}

// ErrDiskBudget is wrapped by errors of steps that wrote more than their disk budget
// (Options.Limits.Disk); it is the build's fault.
var ErrDiskBudget = sandbox.ErrDiskBudget

// DefaultLimits are the limits of a step on this machine, for a builder rooted at root:
// half the memory (at most 8 GiB), every CPU, 4096 processes, and a disk budget of a
// quarter of the root's file system (at most 16 GiB).
func DefaultLimits(root string) sandbox.Limits {
	l := sandbox.Limits{Memory: 8 << 30, CPUs: float64(runtime.NumCPU()), Pids: 4096, Disk: 16 << 30}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		l.Memory = min(l.Memory, int64(si.Totalram)*int64(si.Unit)/2)
	}
	var st unix.Statfs_t
	for dir := root; ; dir = filepath.Dir(dir) { // the root may not exist yet
		if err := unix.Statfs(dir, &st); err == nil {
			l.Disk = min(l.Disk, int64(st.Blocks)*st.Bsize/4)
			break
		} else if dir == filepath.Dir(dir) {
			break
		}
	}
	return l
}

// withDefaults fills the zero fields of l from def and turns negative ones into zero
// (unlimited).
func withDefaults(l, def sandbox.Limits) sandbox.Limits {
	pick := func(v, d int64) int64 {
		switch {
		case v == 0:
			return d
		case v < 0:
			return 0
		}
		return v
	}
	l.Memory, l.Pids, l.Disk = pick(l.Memory, def.Memory), pick(l.Pids, def.Pids), pick(l.Disk, def.Disk)
	switch {
	case l.CPUs == 0:
		l.CPUs = def.CPUs
	case l.CPUs < 0:
		l.CPUs = 0
	}
	return l
}

// Limits are the limits every run step gets (Options.Limits with the defaults filled in).
func (b *Builder) Limits() sandbox.Limits { return b.opts.Limits }

// Store is the builder's snapshot store.
func (b *Builder) Store() *snapshot.Store { return b.store }

// Caches is the store of the named caches' versions.
func (b *Builder) Caches() *snapshot.Store { return b.cacheStore }

// Images is the builder's base image store.
func (b *Builder) Images() *image.Store { return b.images }

// Build runs s and returns the id of its final snapshot. The log gets the equivalent
// Dockerfile first (to reproduce the build locally), then each step's output (replayed
// from the store for cached steps). A failure is an *Error saying whose fault it is.
func (b *Builder) Build(ctx context.Context, s *spec.Spec, bc BuildContext, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	red := NewRedactor(log, bc.Secrets)
	defer red.Flush()
	log = &lockedWriter{w: red}
	fmt.Fprintf(log, "%s\n", s.ReproduceNote())
	l, err := b.newLease()
	if err != nil {
		return "", infraErr("", err)
	}
	defer l.release()
	r := &run{b: b, bc: bc, log: log, lease: l}
	id, err := r.stage(ctx, s, map[string]string{})
	if err != nil {
		return "", err
	}
	fmt.Fprintf(log, "Build succeeded: snapshot %s\n", id)
	return id, nil
}

// lockedWriter serialises writes from concurrent stages.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// run is one Build call.
type run struct {
	b     *Builder
	bc    BuildContext
	log   io.Writer
	lease *lease
}

// state is what earlier ops set for later steps.
type state struct {
	env     []string
	workdir string
	uid     int
	gid     int
	shell   []string
}

func (st *state) setEnv(k, v string) {
	st.env = slices.DeleteFunc(st.env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	st.env = append(st.env, k+"="+v)
}

// stage builds one spec (nested builds first) and returns its final snapshot id.
func (r *run) stage(ctx context.Context, s *spec.Spec, outer map[string]string) (string, error) {
	builds := make(map[string]string, len(outer)+len(s.Builds))
	for k, v := range outer {
		builds[k] = v
	}
	for _, nb := range s.Builds {
		fmt.Fprintf(r.log, "(build %s …)\n", nb.Name)
		id, err := r.stage(ctx, nb.Spec, builds)
		if err != nil {
			return "", err
		}
		builds[nb.Name] = id
	}
	fromStep := "(from " + s.From + ")"
	fmt.Fprintf(r.log, "%s\n", fromStep)
	cur, st, err := r.from(ctx, s.From)
	if err != nil {
		return "", err
	}
	for _, op := range s.Ops {
		if err := ctx.Err(); err != nil {
			return "", infraErr("", err)
		}
		step := st.workdir + ": " + spec.OpString(op)
		switch op := op.(type) {
		case spec.Comment:
			fmt.Fprintf(r.log, "%s\n", step)
		case spec.Workdir:
			if path.IsAbs(op.Path) {
				st.workdir = path.Clean(op.Path)
			} else {
				st.workdir = path.Join(st.workdir, op.Path)
			}
		case spec.Env:
			st.setEnv(op.Name, op.Value)
		case spec.Shell:
			if len(op.Args) == 0 {
				return "", buildErr(step, errors.New("(shell) needs at least one argument"))
			}
			st.shell = slices.Clone(op.Args)
		case spec.User:
			if op.Name != "" {
				return "", buildErr(step, fmt.Errorf("user %q: only numeric (uid N) (gid N) users are supported on Linux", op.Name))
			}
			st.uid, st.gid = op.UID, op.GID
		case spec.Run:
			if cur, err = r.runStep(ctx, cur, step, op, st); err != nil {
				return "", err
			}
		case spec.Copy:
			if cur, err = r.copyStep(ctx, cur, step, op, st, builds); err != nil {
				return "", err
			}
		default:
			return "", buildErr(step, fmt.Errorf("unknown op %q", op.Keyword()))
		}
	}
	return cur, nil
}

// from resolves a base image and imports it into the store as a full snapshot.
func (r *run) from(ctx context.Context, ref string) (string, *state, error) {
	step := "(from " + ref + ")"
	base, err := r.b.images.Resolve(ctx, ref)
	if err != nil {
		// Unknown or unreachable images: blame the spec only for a local name that
		// does not exist.
		if strings.Contains(err.Error(), "no such local base") {
			return "", nil, buildErr(step, err)
		}
		return "", nil, infraErr(step, err)
	}
	id := hashID("from", base.ID)
	st := &state{env: slices.Clone(base.Config.Env), workdir: spec.DefaultWorkdir, shell: slices.Clone(spec.DefaultShell)}
	if !slices.ContainsFunc(st.env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		st.env = append([]string{image.DefaultPath}, st.env...)
	}
	if base.Config.Workdir != "" {
		st.workdir = path.Clean("/" + base.Config.Workdir)
	}
	if u := base.Config.User; u != "" {
		us, gs, _ := strings.Cut(u, ":")
		if uid, err := strconv.Atoi(us); err == nil {
			st.uid, st.gid = uid, uid
			if gid, err := strconv.Atoi(gs); err == nil {
				st.gid = gid
			}
		}
	}
	if err := r.lease.add(id); err != nil {
		return "", nil, infraErr(step, err)
	}
	if _, ok, err := r.b.store.Get(id); err != nil {
		return "", nil, infraErr(step, err)
	} else if ok {
		r.b.store.Touch(id)
		return id, st, nil
	}
	err = r.b.flights.do(ctx, id, r.log, func(ctx context.Context, out io.Writer) error {
		fmt.Fprintf(out, "Importing base %s (%s)\n", ref, base.ID)
		return r.b.store.Import(ctx, id, base.Rootfs, snapshot.Meta{
			Description: step,
			Config:      map[string]string{"image": base.ID, "ref": ref},
		})
	})
	if err != nil {
		return "", nil, infraErr(step, err)
	}
	return id, st, nil
}

// hashID is the digest of its fields, each length-prefixed so that no two field lists
// collide.
func hashID(fields ...string) string {
	h := sha256.New()
	for _, f := range fields {
		h.Write([]byte(strconv.Itoa(len(f)) + ":"))
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// stepID is the id of a step: its parent, its kind, the state it runs in and the
// step's own inputs.
func stepID(parent, kind string, st *state, inputs ...string) string {
	fields := []string{"kiln-step-v1", parent, kind,
		"env", strings.Join(st.env, "\x00"),
		"workdir", st.workdir,
		"user", strconv.Itoa(st.uid) + ":" + strconv.Itoa(st.gid),
		"shell", strings.Join(st.shell, "\x00")}
	return hashID(append(fields, inputs...)...)
}

// cached replays the log of step id if it is in the store.
func (r *run) cached(id, step string) (bool, error) {
	if err := r.lease.add(id); err != nil {
		return false, infraErr(step, err)
	}
	if _, ok, err := r.b.store.Get(id); err != nil {
		return false, infraErr(step, err)
	} else if !ok {
		return false, nil
	}
	log, err := r.b.store.Log(id)
	if err != nil {
		return false, infraErr(step, err)
	}
	r.log.Write(log)
	fmt.Fprintf(r.log, "---> using %q from cache\n", id)
	r.b.store.Touch(id)
	r.b.counts.cached.Add(1)
	stepsTotal.WithLabelValues("cached").Inc()
	return true, nil
}

// execute runs a step once (shared with concurrent builds asking for the same id) on a
// writable copy of parent, and commits it as snapshot id if do succeeds.
func (r *run) execute(ctx context.Context, parent, id, step string, do func(ctx context.Context, rootfs string, out io.Writer) error) (string, error) {
	fmt.Fprintf(r.log, "%s\n", step)
	if ok, err := r.cached(id, step); err != nil || ok {
		return id, err
	}
	err := r.b.flights.do(ctx, id, r.log, func(ctx context.Context, out io.Writer) error {
		if _, ok, _ := r.b.store.Get(id); ok {
			log, _ := r.b.store.Log(id)
			out.Write(log)
			return nil
		}
		w, err := r.b.store.Prepare(ctx, parent)
		if err != nil {
			return infraErr(step, err)
		}
		var stored limitedBuffer
		tee := io.MultiWriter(out, &stored)
		start := time.Now()
		r.b.counts.run.Add(1)
		stepsTotal.WithLabelValues("run").Inc()
		err = do(ctx, w.Rootfs(), tee)
		stepSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			r.b.counts.failed.Add(1)
			stepsTotal.WithLabelValues("failed").Inc()
			if ctx.Err() != nil {
				w.Discard()
				return infraErr(step, fmt.Errorf("cancelled: %w", ctx.Err()))
			}
			err = r.blame(step, err) // before the work's space is freed
			w.Discard()
			return err
		}
		if free := freeBytes(r.b.store.Root()); free < r.b.opts.MinFree {
			// The step may have ignored a failed write: its result cannot be trusted.
			w.Discard()
			return infraErr(step, fmt.Errorf("%w: %d bytes free in %s after the step (floor %d); its result is dropped",
				ErrDiskFull, free, r.b.store.Root(), r.b.opts.MinFree))
		}
		if err := w.Commit(id, snapshot.Meta{Description: step}, stored.b.Bytes()); err != nil {
			return infraErr(step, err)
		}
		slog.Debug("builder: step done", "id", id, "step", step, "duration", time.Since(start))
		return nil
	})
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			err = infraErr(step, err)
		}
		fmt.Fprintf(r.log, "%v\n", err)
		return "", err
	}
	fmt.Fprintf(r.log, "---> saved as %q\n", id)
	return id, nil
}

// blame classifies a failed step, treating any failure while the store's disk is
// (nearly) full as the infrastructure's, unless the step wrote past its disk budget.
func (r *run) blame(step string, err error) error {
	var st unix.Statfs_t
	if errors.Is(err, ErrDiskBudget) {
		// Past its budget, the step filled the disk itself if it is full.
		return classify(step, err)
	}
	if unix.Statfs(r.b.store.Root(), &st) == nil {
		if free := int64(st.Bavail) * int64(st.Bsize); free < r.b.opts.MinFree {
			return infraErr(step, fmt.Errorf("%w (%d bytes free in %s): %w", ErrDiskFull, free, r.b.store.Root(), err))
		}
	}
	return classify(step, err)
}

// limitedBuffer keeps the first maxStepLog bytes written to it, then a mark.
type limitedBuffer struct {
	b         bytes.Buffer
	truncated bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	switch {
	case l.b.Len()+len(p) <= maxStepLog:
		l.b.Write(p)
	case !l.truncated:
		l.truncated = true
		fmt.Fprintf(&l.b, "\n[kiln: log truncated at %d MiB]\n", maxStepLog>>20)
	}
	return len(p), nil
}
