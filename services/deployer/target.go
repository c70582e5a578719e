package deployer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HealthError is a deploy whose new version failed its health check; the previous
// version was kept or restored.
type HealthError struct {
	// Output is what the last check saw (status and body, or the command's output).
	Output string
	// Restore is the error restoring the previous version, if that failed too.
	Restore error
}

func (e *HealthError) Error() string {
	if e.Restore != nil {
		return fmt.Sprintf("health check failed: %s; restoring the previous version failed too: %v", e.Output, e.Restore)
	}
	return "health check failed: " + e.Output
}

// stage is one target of one service, ready to deploy to.
type stage struct {
	name   string // staging or production
	t      *Target
	r      *runner
	health HealthConfig
	// login logs the host's engine in to the registry (nil without credentials).
	login func(ctx context.Context, r *runner) error
	// build is the build engine, where artifacts are copied out of images.
	build *runner
	// tmp is where artifacts are copied to.
	tmp  string
	logf func(format string, args ...any)
}

// deploy puts image (registry/repo@digest) live on the stage, health-checked. On a
// failed check the previous version keeps or gets back its place and the error is a
// *HealthError.
func (s *stage) deploy(ctx context.Context, image string) error {
	switch {
	case s.t.Container != nil:
		return s.deployContainer(ctx, image)
	case s.t.Swarm != nil:
		return s.deploySwarm(ctx, image)
	case s.t.Command != nil:
		return s.deployCommand(ctx, image)
	case s.t.Compose != nil:
		return s.deployCompose(ctx, image)
	}
	return errors.New("no deploy method")
}

func (s *stage) pull(ctx context.Context, image string) error {
	if s.login != nil {
		if err := s.login(ctx, s.r); err != nil {
			return fmt.Errorf("registry login on %s: %w", s.r.name, err)
		}
	}
	if _, err := s.r.run(ctx, nil, "docker", "pull", "-q", image); err != nil {
		return fmt.Errorf("pull %s: %w", image, err)
	}
	return nil
}

var upstreamPort = regexp.MustCompile(`server\s+[^\s;]+:(\d+)`)

// liveSlot reads which slot the proxy sends to now (-1: none).
func liveSlot(ct *ContainerTarget, upstream string) int {
	m := upstreamPort.FindStringSubmatch(upstream)
	if m == nil {
		return -1
	}
	p, _ := strconv.Atoi(m[1])
	return slices.Index(ct.Slots[:], p)
}

func upstreamConf(ct *ContainerTarget, slot int) string {
	return fmt.Sprintf("# written by kiln's deployer\nupstream %s {\n    server 127.0.0.1:%d;\n}\n", ct.Proxy.Upstream, ct.Slots[slot])
}

func (s *stage) instanceAddr() string {
	if s.r.h.Address != "" {
		return s.r.h.Address
	}
	if s.r.h.SSH == "" {
		return "127.0.0.1"
	}
	_, host, _, _ := splitSSH(s.r.h.SSH)
	return host
}

func (s *stage) deployContainer(ctx context.Context, image string) error {
	ct := s.t.Container
	if err := s.pull(ctx, image); err != nil {
		return err
	}
	old, err := s.r.readFile(ctx, ct.Proxy.UpstreamFile)
	if err != nil {
		return fmt.Errorf("read the proxy's upstream file: %w", err)
	}
	live := liveSlot(ct, old)
	next := 0
	if live == 0 {
		next = 1
	}
	name := fmt.Sprintf("%s-%c", ct.Name, 'a'+next)
	s.r.run(ctx, nil, "docker", "rm", "-f", name) // a leftover of an interrupted attempt
	bind := "127.0.0.1:"
	if s.r.h.SSH != "" {
		bind = ""
	}
	args := []string{"docker", "run", "-d", "--name", name, "--restart", "unless-stopped",
		"--label", "kiln.deployer.image=" + image}
	if ct.Network == "host" {
		args = append(args, "--network", "host", "-e", fmt.Sprintf("PORT=%d", ct.Slots[next]))
	} else {
		args = append(args, "-p", fmt.Sprintf("%s%d:%d", bind, ct.Slots[next], ct.Port))
	}
	for _, k := range sortedKeys(ct.Env) {
		args = append(args, "-e", k+"="+ct.Env[k])
	}
	if _, err := s.r.run(ctx, nil, append(args, image)...); err != nil {
		s.r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", name)
		return fmt.Errorf("start %s: %w", name, err)
	}
	url := fmt.Sprintf("http://%s:%d%s", s.instanceAddr(), ct.Slots[next], s.health.Path)
	s.logf("started %s on port %d; checking %s", name, ct.Slots[next], url)
	if out, ok := s.check(ctx, url, s.health.Deadline.Or(time.Minute)); !ok {
		logs, _ := s.r.run(context.WithoutCancel(ctx), nil, "sh", "-c", `docker logs --tail 20 "$1" 2>&1`, "sh", name)
		s.r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", name)
		if logs != "" {
			out += "\ncontainer log:\n" + logs
		}
		return &HealthError{Output: out}
	}
	if err := s.switchProxy(ctx, upstreamConf(ct, next), old); err != nil {
		s.r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", name)
		return err
	}
	if ct.Proxy.URL != "" {
		if out, ok := s.check(ctx, strings.TrimSuffix(ct.Proxy.URL, "/")+s.health.Path, 15*time.Second); !ok {
			rerr := s.switchProxy(context.WithoutCancel(ctx), old, "")
			if rerr == nil {
				s.r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", name)
			}
			return &HealthError{Output: "through the proxy: " + out, Restore: rerr}
		}
	}
	if live >= 0 {
		oldName := fmt.Sprintf("%s-%c", ct.Name, 'a'+live)
		sleep(ctx, ct.Drain.Or(2*time.Second))
		if _, err := s.r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", oldName); err != nil {
			s.logf("removing the previous instance %s: %v", oldName, err)
		}
	}
	return nil
}

// switchProxy writes conf as the upstream file and reloads the proxy; if the reload
// fails and prev is not empty, prev is put back and reloaded.
func (s *stage) switchProxy(ctx context.Context, conf, prev string) error {
	p := s.t.Container.Proxy
	if err := s.r.writeFile(ctx, p.UpstreamFile, []byte(conf)); err != nil {
		return fmt.Errorf("write the proxy's upstream file: %w", err)
	}
	_, err := s.r.run(ctx, nil, p.Reload...)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("reload the proxy: %w", err)
	if prev != "" {
		if werr := s.r.writeFile(context.WithoutCancel(ctx), p.UpstreamFile, []byte(prev)); werr != nil {
			return fmt.Errorf("%w; putting the previous upstream file back: %v", err, werr)
		}
		if _, rerr := s.r.run(context.WithoutCancel(ctx), nil, p.Reload...); rerr != nil {
			return fmt.Errorf("%w; reloading the previous configuration: %v", err, rerr)
		}
	}
	return err
}

func (s *stage) deploySwarm(ctx context.Context, image string) error {
	sw := s.t.Swarm
	prev, err := s.r.run(ctx, nil, "docker", "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", sw.Service)
	if err != nil {
		return fmt.Errorf("swarm service %s (create it first): %w", sw.Service, err)
	}
	if s.login != nil {
		if err := s.login(ctx, s.r); err != nil {
			return fmt.Errorf("registry login on %s: %w", s.r.name, err)
		}
	}
	update := func(ctx context.Context, img string) error {
		// The deployer's health check judges the new tasks: swarm's own monitoring period
		// (5 s by default, after each task) is cut to 1 s.
		_, err := s.r.run(ctx, nil, "docker", "service", "update", "--quiet", "--detach=false", "--with-registry-auth",
			"--update-order", cmp.Or(sw.UpdateOrder, "start-first"), "--update-monitor", "1s", "--image", img, sw.Service)
		return err
	}
	if err := update(ctx, image); err != nil {
		rerr := update(context.WithoutCancel(ctx), prev)
		if rerr != nil {
			return fmt.Errorf("update swarm service %s: %w; restoring %s: %v", sw.Service, err, prev, rerr)
		}
		return fmt.Errorf("update swarm service %s: %w (restored %s)", sw.Service, err, prev)
	}
	if out, ok := s.check(ctx, strings.TrimSuffix(sw.URL, "/")+s.health.Path, s.health.Deadline.Or(time.Minute)); !ok {
		return &HealthError{Output: out, Restore: update(context.WithoutCancel(ctx), prev)}
	}
	return nil
}

func (s *stage) deployCommand(ctx context.Context, image string) error {
	c := s.t.Command
	if s.login != nil {
		if err := s.login(ctx, s.build); err != nil {
			return fmt.Errorf("registry login on the build engine: %w", err)
		}
	}
	local, err := extractArtifact(ctx, s.build, s.tmp, image, c.Artifact)
	if err != nil {
		return fmt.Errorf("artifact %s of %s: %w", c.Artifact, image, err)
	}
	defer os.RemoveAll(filepath.Dir(local))
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := s.r.run(ctx, nil, "sh", "-c", `if [ -e "$1" ]; then cp -p "$1" "$1.previous"; else rm -f "$1.previous"; fi`, "sh", c.Dest); err != nil {
		return fmt.Errorf("keep the previous %s: %w", c.Dest, err)
	}
	if _, err := s.r.run(ctx, f, "sh", "-c", `cat > "$1.kiln-new" && chmod 755 "$1.kiln-new" && mv -f "$1.kiln-new" "$1"`, "sh", c.Dest); err != nil {
		return fmt.Errorf("copy to %s: %w", c.Dest, err)
	}
	restore := func() error {
		ctx := context.WithoutCancel(ctx)
		if _, err := s.r.run(ctx, nil, "sh", "-c", `if [ -e "$1.previous" ]; then mv -f "$1.previous" "$1"; fi`, "sh", c.Dest); err != nil {
			return err
		}
		_, err := s.r.run(ctx, nil, c.Run...)
		return err
	}
	if _, err := s.r.run(ctx, nil, c.Run...); err != nil {
		if rerr := restore(); rerr != nil {
			return fmt.Errorf("%w; restoring the previous version: %v", err, rerr)
		}
		return fmt.Errorf("%w (the previous version was restored)", err)
	}
	if c.URL != "" || len(s.health.Command) > 0 {
		if out, ok := s.check(ctx, strings.TrimSuffix(c.URL, "/")+s.health.Path, s.health.Deadline.Or(time.Minute)); !ok {
			return &HealthError{Output: out, Restore: restore()}
		}
	}
	return nil
}

// check runs the health check until it passes or the deadline passes, and returns what
// the last attempt saw.
func (s *stage) check(ctx context.Context, url string, deadline time.Duration) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var out string
	for {
		var ok bool
		out, ok = s.checkOnce(ctx, url)
		if ok {
			s.logf("health check passed: %s", out)
			return out, true
		}
		if !sleep(ctx, 300*time.Millisecond) {
			s.logf("health check failed within %s: %s", deadline, out)
			return out, false
		}
	}
}

// checkOnce runs the health check once: the command when configured, else GET url.
func (s *stage) checkOnce(ctx context.Context, url string) (string, bool) {
	if len(s.health.Command) > 0 {
		out, err := s.r.run(ctx, nil, s.health.Command...)
		if err != nil {
			return err.Error(), false
		}
		return out, true
	}
	return httpCheck(ctx, url, s.health.Expect)
}

var checkClient = &http.Client{Timeout: 5 * time.Second}

func httpCheck(ctx context.Context, url, expect string) (string, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error(), false
	}
	resp, err := checkClient.Do(req)
	if err != nil {
		return fmt.Sprintf("GET %s: %v", url, errors.Unwrap(err)), false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	out := fmt.Sprintf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode/100 != 2 {
		return out, false
	}
	if expect != "" && !strings.Contains(string(body), expect) {
		return out + fmt.Sprintf(" (want %q in the body)", expect), false
	}
	return out, true
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
