// Package docker runs OBuilder specs with the Docker engine instead of runc: bases are
// imported with `docker import`, every step runs in its own container, and a
// successful step is kept with `docker commit` as an image tagged with its step id, so
// a later build finds it as a cache hit and replays its stored log.
package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Engine drives a Docker engine through the docker command.
type Engine struct {
	// Bin is the docker command; empty is "docker" from PATH.
	Bin string
	// Host is the engine's address (DOCKER_HOST); empty is the docker default.
	Host string
	// Env adds variables to the docker command's environment (e.g. DOCKER_API_VERSION).
	Env []string
}

func (e *Engine) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := e.Bin
	if bin == "" {
		bin = "docker"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	env := os.Environ()
	if e.Host != "" {
		env = append(env, "DOCKER_HOST="+e.Host)
	}
	cmd.Env = append(env, e.Env...)
	return cmd
}

// run runs a docker command and returns its trimmed standard output; the error
// carries standard error.
func (e *Engine) run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := e.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("docker %s: %s", args[0], msg)
	}
	return strings.TrimSpace(out.String()), nil
}

// Version returns the engine's server version, failing when it is unreachable.
func (e *Engine) Version(ctx context.Context) (string, error) {
	return e.run(ctx, nil, "version", "--format", "{{.Server.Version}}")
}

// ImageExists reports whether the engine has an image with this reference.
func (e *Engine) ImageExists(ctx context.Context, ref string) bool {
	_, err := e.run(ctx, nil, "image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// RemoveContainer removes a container, even running; it outlives ctx's cancellation.
func (e *Engine) RemoveContainer(id string) {
	e.run(context.Background(), nil, "rm", "-f", "-v", id)
}

// BuildDockerfile runs `docker build` of a Dockerfile with the given context
// directory and tags the result. The engine's classic builder is used (the docker
// packages of Debian bookworm lack buildx, which BuildKit needs from the CLI), so the
// Dockerfile must be rendered without BuildKit flags; steps get the host's network.
// extra are more arguments of docker build (--build-arg K=V).
func (e *Engine) BuildDockerfile(ctx context.Context, dockerfile, contextDir, tag string, out io.Writer, extra ...string) error {
	args := append([]string{"build", "--network=host", "-t", tag, "-f", "-"}, extra...)
	cmd := e.command(ctx, append(args, contextDir)...)
	cmd.Env = append(cmd.Env, "DOCKER_BUILDKIT=0")
	cmd.Stdin = strings.NewReader(dockerfile)
	var errb bytes.Buffer
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(out, &errb)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker build: %v: %s", err, lastLines(errb.String(), 10))
	}
	return nil
}

// Load loads a Docker image archive (docker save's format) and returns what the
// engine says it loaded.
func (e *Engine) Load(ctx context.Context, archive io.Reader) (string, error) {
	return e.run(ctx, archive, "load")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
