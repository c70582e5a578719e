package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/spec"
)

// Runner builds specs with a Docker engine.
type Runner struct {
	Engine *Engine
	// Images resolves (from …) references; the base's root filesystem is imported
	// into the engine as BaseRepo:<digest>.
	Images *image.Store
	// LogDir keeps the log of each successful step as <step id>.log, replayed on hits.
	LogDir string
	// StepRepo and BaseRepo name the engine's images of steps and bases.
	StepRepo, BaseRepo string
	// Memory (bytes), CPUs and Pids limit each run step; zero is unlimited.
	Memory int64
	CPUs   float64
	Pids   int64
	// StepTimeout ends a run step that takes longer; zero is no limit.
	StepTimeout time.Duration

	flight singleflight.Group
	mu     sync.Mutex
	known  map[string]bool // step images seen at the start of the current build
}

// NewRunner returns a runner keeping step logs under logDir.
func NewRunner(e *Engine, images *image.Store, logDir string) (*Runner, error) {
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	removeStaleSecrets()
	return &Runner{Engine: e, Images: images, LogDir: logDir, StepRepo: "kiln-step", BaseRepo: "kiln-base"}, nil
}

// Options are the inputs of one build besides the spec.
type Options struct {
	// Context is the directory (copy …) reads from.
	Context string
	// Secrets holds the values of the secrets steps ask for, by id.
	Secrets map[string][]byte
	// Log receives the build log.
	Log io.Writer
}

// Result is a finished build.
type Result struct {
	// ID is the final step's id (the base's digest when no step made a snapshot).
	ID string
	// Image is the engine's image holding the result.
	Image string
}

// StepError is a step that ran and failed (the build's fault, not the engine's).
type StepError struct {
	Op       string
	ExitCode int
	// OOMKilled: the step went past the memory limit.
	OOMKilled bool
	// TimedOut: the step ran past StepTimeout.
	TimedOut bool
}

func (e *StepError) Error() string {
	switch {
	case e.OOMKilled:
		return fmt.Sprintf("%s: memory limit exceeded (command killed, exit status %d)", e.Op, e.ExitCode)
	case e.TimedOut:
		return fmt.Sprintf("%s: timed out", e.Op)
	}
	return fmt.Sprintf("%s: command failed with exit status %d", e.Op, e.ExitCode)
}

// Build runs the spec: nested builds first, then the main stage.
func (r *Runner) Build(ctx context.Context, s *spec.Spec, o Options) (Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	// One listing of the step images answers every cache lookup of the build.
	if tags, err := r.Engine.run(ctx, nil, "image", "ls", "--format", "{{.Tag}}", r.StepRepo); err == nil {
		known := map[string]bool{}
		for _, t := range strings.Fields(tags) {
			known[r.StepRepo+":"+t] = true
		}
		r.mu.Lock()
		r.known = known
		r.mu.Unlock()
	}
	red := builder.NewRedactor(o.Log, o.Secrets)
	defer red.Flush()
	o.Log = red
	fmt.Fprintf(o.Log, "%s\n", s.ReproduceNote())
	res, err := r.stage(ctx, s, o, map[string]Result{})
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("build cancelled: %w", ctx.Err())
	}
	if err != nil {
		fmt.Fprintf(o.Log, "%v\n", err)
		return Result{}, err
	}
	fmt.Fprintf(o.Log, "Build succeeded: snapshot %s\n", res.ID)
	return res, nil
}

func (r *Runner) stage(ctx context.Context, s *spec.Spec, o Options, outer map[string]Result) (Result, error) {
	builds := make(map[string]Result, len(outer))
	for k, v := range outer {
		builds[k] = v
	}
	for _, b := range s.Builds {
		fmt.Fprintf(o.Log, "(build %s …)\n", b.Name)
		res, err := r.stage(ctx, b.Spec, o, builds)
		if err != nil {
			return Result{}, fmt.Errorf("build %s: %w", b.Name, err)
		}
		builds[b.Name] = res
	}
	base, err := r.Images.Resolve(ctx, s.From)
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(o.Log, "(from %s)\n", s.From)
	img, err := r.importBase(ctx, base)
	if err != nil {
		return Result{}, err
	}
	cur := Result{ID: baseID(base.ID), Image: img}
	c := &stepContext{env: slices.Clone(base.Config.Env), workdir: spec.DefaultWorkdir, shell: slices.Clone(spec.DefaultShell)}
	if !slices.ContainsFunc(c.env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		c.env = append([]string{image.DefaultPath}, c.env...)
	}
	if base.Config.Workdir != "" {
		c.workdir = path.Clean("/" + base.Config.Workdir)
	}
	if us, gs, _ := strings.Cut(base.Config.User, ":"); us != "" {
		if uid, err := strconv.Atoi(us); err == nil {
			c.user.UID, c.user.GID = uid, uid
			if gid, err := strconv.Atoi(gs); err == nil {
				c.user.GID = gid
			}
		}
	}
	for _, op := range s.Ops {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		switch op := op.(type) {
		case spec.Comment:
			fmt.Fprintf(o.Log, "%s: %s\n", c.workdir, spec.OpString(op))
		case spec.Workdir:
			if strings.HasPrefix(op.Path, "/") {
				c.workdir = path.Clean(op.Path)
			} else {
				c.workdir = path.Join(c.workdir, op.Path)
			}
		case spec.Env:
			c.setEnv(op.Name, op.Value)
		case spec.User:
			c.user = op
		case spec.Shell:
			c.shell = slices.Clone(op.Args)
		case spec.Run:
			for _, n := range op.Network {
				if n != "host" {
					return Result{}, fmt.Errorf("run: network %q: only (network host) is supported", n)
				}
			}
			id := runID(cur.ID, op, c)
			if cur, err = r.step(ctx, id, c.workdir, op, o, func(log io.Writer) error { return r.runStep(ctx, cur.Image, id, op, c, o, log) }); err != nil {
				return Result{}, err
			}
		case spec.Copy:
			var id string
			var fill func(io.Writer) error
			if op.FromBuild != "" {
				src, ok := builds[op.FromBuild]
				if !ok {
					return Result{}, fmt.Errorf("copy: unknown build %q", op.FromBuild)
				}
				id = copyID(cur.ID, op, c, "build:"+src.ID)
				fill = func(log io.Writer) error { return r.copyFromBuild(ctx, cur.Image, src.Image, id, op, c) }
			} else {
				if o.Context == "" {
					return Result{}, fmt.Errorf("copy: no build context directory given")
				}
				srcs, err := contextSources(op.Src, op.Dst, c.workdir)
				if err != nil {
					return Result{}, err
				}
				digest, err := contentDigest(o.Context, srcs, op.Exclude)
				if err != nil {
					return Result{}, err
				}
				id = copyID(cur.ID, op, c, "context:"+digest)
				fill = func(log io.Writer) error {
					return r.copyFromContext(ctx, cur.Image, id, o.Context, srcs, op, c)
				}
			}
			if cur, err = r.step(ctx, id, c.workdir, op, o, fill); err != nil {
				return Result{}, err
			}
		}
	}
	return cur, nil
}

func (r *Runner) stepImage(id string) string { return r.StepRepo + ":" + id }

// step returns the cached snapshot of id, or runs do and keeps its result; the log
// is written to o.Log either way.
func (r *Runner) step(ctx context.Context, id, workdir string, op spec.Op, o Options, do func(io.Writer) error) (Result, error) {
	fmt.Fprintf(o.Log, "%s: %s\n", workdir, spec.OpString(op))
	res := Result{ID: id, Image: r.stepImage(id)}
	logPath := filepath.Join(r.LogDir, id+".log")
	r.mu.Lock()
	hit := r.known[res.Image]
	r.mu.Unlock()
	if hit || r.Engine.ImageExists(ctx, res.Image) {
		if b, err := os.ReadFile(logPath); err == nil {
			o.Log.Write(b)
		}
		fmt.Fprintf(o.Log, "---> using %q from cache\n", id)
		return res, nil
	}
	v, err, shared := r.flight.Do(id, func() (any, error) {
		var buf bytes.Buffer
		err := do(io.MultiWriter(&buf, o.Log))
		if err != nil {
			return buf.Bytes(), err
		}
		if werr := os.WriteFile(logPath+".tmp", buf.Bytes(), 0o600); werr == nil {
			os.Rename(logPath+".tmp", logPath)
		}
		return buf.Bytes(), nil
	})
	if shared {
		o.Log.Write(v.([]byte))
	}
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(o.Log, "---> saved as %q\n", id)
	return res, nil
}

// importBase makes the base's root filesystem an engine image, once.
func (r *Runner) importBase(ctx context.Context, b image.Base) (string, error) {
	ref := r.BaseRepo + ":" + strings.TrimPrefix(b.ID, "sha256:")
	if r.Engine.ImageExists(ctx, ref) {
		return ref, nil
	}
	v, err, _ := r.flight.Do("import "+ref, func() (any, error) {
		pr, pw := io.Pipe()
		terr := make(chan error, 1)
		go func() {
			err := b.Tar(ctx, pw, false)
			pw.CloseWithError(err)
			terr <- err
		}()
		_, ierr := r.Engine.run(ctx, pr, "import", "-", ref)
		pr.CloseWithError(errors.New("the engine stopped reading"))
		if err := <-terr; err != nil && ierr == nil {
			// The engine may have taken the stream as ended: drop what it made of it.
			r.Engine.run(context.WithoutCancel(ctx), nil, "image", "rm", "-f", ref)
			return nil, fmt.Errorf("import base: %w", err)
		}
		if ierr != nil {
			return nil, fmt.Errorf("import base %s: %w", b.Ref, ierr)
		}
		return ref, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// cacheVolume returns the engine volume of a named cache, creating it owned by the
// step's user the first time.
func (r *Runner) cacheVolume(ctx context.Context, img, id string, c *stepContext) (string, error) {
	name := cacheVolumeName(id)
	if _, err := r.Engine.run(ctx, nil, "volume", "inspect", name); err == nil {
		return name, nil
	}
	if _, err := r.Engine.run(ctx, nil, "volume", "create", name); err != nil {
		return "", err
	}
	if c.user.Name == "" && !c.user.IsRoot() {
		_, err := r.Engine.run(ctx, nil, "run", "--rm", "--network=none", "-u", "0:0", "--entrypoint", "",
			"-v", name+":/cache", img, "chown", c.userString(), "/cache")
		if err != nil {
			r.Engine.run(context.Background(), nil, "volume", "rm", name)
			return "", fmt.Errorf("cache %s: %w", id, err)
		}
	}
	return name, nil
}

func (r *Runner) runStep(ctx context.Context, img, id string, op spec.Run, c *stepContext, o Options, log io.Writer) error {
	args := []string{"create", "--entrypoint", "", "-u", c.userString(), "-w", c.workdir}
	if op.HostNetwork() {
		args = append(args, "--network=host")
	} else {
		args = append(args, "--network=none")
	}
	for _, kv := range c.env {
		args = append(args, "-e", kv)
	}
	if r.Memory > 0 {
		args = append(args, "--memory", strconv.FormatInt(r.Memory, 10), "--memory-swap", strconv.FormatInt(r.Memory, 10))
	}
	if r.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(r.CPUs, 'f', -1, 64))
	}
	if r.Pids > 0 {
		args = append(args, "--pids-limit", strconv.FormatInt(r.Pids, 10))
	}
	for _, m := range op.Cache {
		vol, err := r.cacheVolume(ctx, img, m.ID, c)
		if err != nil {
			return err
		}
		args = append(args, "--mount", mountArg("type=volume", "src="+vol, "dst="+inside(c.workdir, m.Target)))
	}
	if len(op.Secrets) > 0 {
		dir, err := secretDir()
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		for i, s := range op.Secrets {
			v, ok := o.Secrets[s.ID]
			if !ok {
				return fmt.Errorf("secret %q is not provided", s.ID)
			}
			f := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(f, v, 0o400); err != nil {
				return err
			}
			if c.user.Name == "" {
				os.Chown(f, c.user.UID, c.user.GID)
			}
			args = append(args, "--mount", mountArg("type=bind", "src="+f, "dst="+inside(c.workdir, s.Target), "readonly"))
		}
	}
	args = append(args, img)
	args = append(args, c.shell...)
	args = append(args, op.Shell)
	ctr, err := r.Engine.run(ctx, nil, args...)
	if err != nil {
		return err
	}
	defer r.Engine.RemoveContainer(ctr)
	runCtx := ctx
	if r.StepTimeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, r.StepTimeout)
		defer cancel()
	}
	// Redacted before the log is stored, so that a cache hit never replays a value.
	red := builder.NewRedactor(log, o.Secrets)
	defer red.Flush()
	start := r.Engine.command(runCtx, "start", "-a", ctr)
	start.Stdout = red
	start.Stderr = red
	start.Cancel = func() error {
		r.Engine.run(context.Background(), nil, "kill", ctr)
		return start.Process.Kill()
	}
	start.WaitDelay = 10 * time.Second
	if err := start.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if runCtx.Err() != nil {
			return &StepError{Op: "run", ExitCode: -1, TimedOut: true}
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			state, _ := r.Engine.run(context.Background(), nil, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", ctr)
			var n int
			var oom bool
			fmt.Sscan(state, &n, &oom)
			if n == 0 {
				n = ee.ExitCode()
			}
			return &StepError{Op: "run", ExitCode: n, OOMKilled: oom}
		}
		return err
	}
	_, err = r.Engine.run(ctx, nil, "commit", ctr, r.stepImage(id))
	return err
}

// fillContainer runs tar as root in a container of img to unpack the stream that
// write produces at the root, keeping the owners it gives, and commits the container
// as the step's image. Like OBuilder, this needs a tar command in the image.
func (r *Runner) fillContainer(ctx context.Context, img, id string, write func(io.Writer) error) error {
	ctr, err := r.Engine.run(ctx, nil, "create", "-i", "--network=none", "-u", "0", "--entrypoint", "",
		img, "tar", "-xf", "-", "-C", "/", "--same-owner", "--same-permissions")
	if err != nil {
		return err
	}
	defer r.Engine.RemoveContainer(ctr)
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	start := r.Engine.command(ctx, "start", "-a", "-i", ctr)
	start.Stdin = pr
	var out bytes.Buffer
	start.Stdout = &out
	start.Stderr = &out
	serr := start.Run()
	pr.CloseWithError(errors.New("copy ended"))
	if err := <-werr; err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("copy: unpacking in the container failed: %v: %s", serr, lastLines(out.String(), 5))
	}
	_, err = r.Engine.run(ctx, nil, "commit", ctr, r.stepImage(id))
	return err
}

func (r *Runner) copyFromContext(ctx context.Context, img, id, root string, srcs []source, op spec.Copy, c *stepContext) error {
	return r.fillContainer(ctx, img, id, func(w io.Writer) error {
		return writeContextTar(w, root, srcs, op.Exclude, c.user.UID, c.user.GID)
	})
}

func (r *Runner) copyFromBuild(ctx context.Context, img, from, id string, op spec.Copy, c *stepContext) error {
	srcCtr, err := r.Engine.run(ctx, nil, "create", "--network=none", "-u", "0", "--entrypoint", "", from, "true")
	if err != nil {
		return err
	}
	defer r.Engine.RemoveContainer(srcCtr)
	dst := op.Dst
	if !strings.HasPrefix(dst, "/") {
		dst = path.Join(c.workdir, dst) + map[bool]string{true: "/"}[strings.HasSuffix(dst, "/")]
	}
	if len(op.Src) > 1 && !strings.HasSuffix(dst, "/") {
		return fmt.Errorf("copy: %d sources need a destination ending in '/' (got %q)", len(op.Src), op.Dst)
	}
	return r.fillContainer(ctx, img, id, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, s := range op.Src {
			src := path.Join("/", s)
			dest := path.Clean(dst)
			if strings.HasSuffix(dst, "/") && src != "/" {
				dest = path.Join(dest, path.Base(src))
			}
			cmd := r.Engine.command(ctx, "cp", srcCtr+":"+src, "-")
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				return err
			}
			rerr := retarget(tw, out, dest, op.Exclude, c.user.UID, c.user.GID)
			io.Copy(io.Discard, out)
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("copy from build: %s: %s", s, strings.TrimSpace(errb.String()))
			}
			if rerr != nil {
				return rerr
			}
		}
		return tw.Close()
	})
}

// mountArg joins --mount fields as the docker command parses them (CSV), quoting each
// so that a target path from a spec cannot add fields of its own.
func mountArg(fields ...string) string {
	for i, f := range fields {
		if strings.ContainsAny(f, ",\"\n\r") {
			fields[i] = `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
		}
	}
	return strings.Join(fields, ",")
}

// inside resolves p against the working directory.
func inside(workdir, p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(workdir, p)
}
