package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/spec"
)

// inside resolves p (absolute, or relative to the workdir) to an absolute clean path.
func inside(workdir, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(workdir, p)
}

// runStep runs (run …) on top of parent.
func (r *run) runStep(ctx context.Context, parent, step string, op spec.Run, st *state) (string, error) {
	inputs := []string{"shell", op.Shell, "network"}
	if op.HostNetwork() {
		inputs = append(inputs, "host")
	} else {
		inputs = append(inputs, "none")
	}
	for _, n := range op.Network {
		if n != "host" {
			return "", buildErr(step, fmt.Errorf("network %q: only (network host) is supported", n))
		}
	}
	for _, c := range op.Cache {
		inputs = append(inputs, "cache", c.ID, inside(st.workdir, c.Target))
	}
	var secrets []sandbox.Secret
	for _, s := range op.Secrets {
		v, ok := r.bc.Secrets[s.ID]
		if !ok {
			return "", buildErr(step, fmt.Errorf("secret %q was not provided", s.ID))
		}
		target := inside(st.workdir, s.Target)
		inputs = append(inputs, "secret", s.ID, target)
		secrets = append(secrets, sandbox.Secret{Target: target, Value: v})
	}
	var tmpfs []string
	for _, d := range op.Tmpfs {
		tmpfs = append(tmpfs, inside(st.workdir, d))
		inputs = append(inputs, "tmpfs", tmpfs[len(tmpfs)-1])
	}
	if len(op.Secrets) > 0 {
		// Logs of such steps stored before redaction may hold secret values: never
		// replay them.
		inputs = append(inputs, "log", "redacted")
	}
	id := stepID(parent, "run", st, inputs...)
	if r.b.sandbox == nil {
		return "", infraErr(step, r.b.sandboxErr)
	}
	return r.execute(ctx, parent, id, step, func(ctx context.Context, rootfs string, out io.Writer) error {
		if err := mkdirInRoot(rootfs, st.workdir, st.uid, st.gid); err != nil {
			err = fmt.Errorf("workdir %s: %w", st.workdir, err)
			if errors.Is(err, syscall.ENOSPC) {
				return err
			}
			return buildErr(step, err)
		}
		// Every secret of the build is hidden, in case an earlier step left one in
		// the file system.
		red := NewRedactor(out, r.bc.Secrets)
		defer red.Flush()
		out = red
		cfg := sandbox.Config{
			Rootfs:      rootfs,
			Args:        append(slices.Clone(st.shell), op.Shell),
			Env:         slices.Clone(st.env),
			Cwd:         st.workdir,
			UID:         uint32(st.uid),
			GID:         uint32(st.gid),
			HostNetwork: op.HostNetwork(),
			Secrets:     secrets,
			Tmpfs:       tmpfs,
			Limits:      r.b.opts.Limits,
			Timeout:     r.b.opts.StepTimeout,
		}
		for _, c := range op.Cache {
			co, err := r.checkoutCache(ctx, c.ID, st.uid, st.gid)
			if err != nil {
				return fmt.Errorf("cache %s: %w", c.ID, err)
			}
			defer co.release()
			cfg.Mounts = append(cfg.Mounts, sandbox.Mount{Source: co.dir, Target: inside(st.workdir, c.Target)})
		}
		_, err := r.b.sandbox.Run(ctx, cfg, out)
		return err
	})
}

// mkdirInRoot makes the directory dir (absolute) inside rootfs, the missing parts
// owned by uid:gid (as BuildKit's WORKDIR does).
func mkdirInRoot(rootfs, dir string, uid, gid int) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	rel, err := resolveInRoot(root, strings.TrimPrefix(path.Clean(dir), "/"))
	if err != nil {
		return err
	}
	return mkdirParents(root, rel, uid, gid)
}

// copyStep runs (copy …) on top of parent, from the build context or a nested build.
func (r *run) copyStep(ctx context.Context, parent, step string, op spec.Copy, st *state, builds map[string]string) (string, error) {
	if len(op.Src) == 0 {
		return "", buildErr(step, errors.New("copy has no (src …)"))
	}
	dst := op.Dst
	if dst == "" {
		return "", buildErr(step, errors.New("copy has no (dst …)"))
	}
	abs := inside(st.workdir, dst)
	if strings.HasSuffix(dst, "/") && abs != "/" {
		abs += "/"
	}
	var srcDir, source string
	if op.FromBuild != "" {
		from, ok := builds[op.FromBuild]
		if !ok {
			return "", buildErr(step, fmt.Errorf("copy from unknown build %q", op.FromBuild))
		}
		dir, release, err := r.b.store.Mount(from)
		if err != nil {
			return "", infraErr(step, err)
		}
		defer release()
		srcDir, source = dir, "build:"+from
	} else {
		if r.bc.Dir == "" {
			return "", buildErr(step, errors.New("copy needs a build context directory"))
		}
		srcDir = r.bc.Dir
	}
	root, err := os.OpenRoot(srcDir)
	if err != nil {
		return "", buildErr(step, fmt.Errorf("context: %w", err))
	}
	defer root.Close()
	plan, err := planCopy(root, op.Src, abs, op.Exclude)
	if err != nil {
		return "", buildErr(step, err)
	}
	if source == "" {
		if source, err = plan.digest(); err != nil {
			return "", buildErr(step, err)
		}
		source = "context:" + source
	}
	inputs := []string{"src", strings.Join(op.Src, "\x00"), "dst", abs, "exclude", strings.Join(op.Exclude, "\x00"), "source", source}
	id := stepID(parent, "copy", &state{workdir: st.workdir, uid: st.uid, gid: st.gid}, inputs...)
	return r.execute(ctx, parent, id, step, func(ctx context.Context, rootfs string, out io.Writer) error {
		if err := plan.write(rootfs, st.uid, st.gid); err != nil && !errors.Is(err, syscall.ENOSPC) {
			return buildErr(step, err)
		} else {
			return err
		}
	})
}
