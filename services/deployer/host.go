package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/registry"
)

// The kinds of failure reaching a host; test them with errors.Is.
var (
	// ErrHostKeyChanged is a host whose key is not the one in its known_hosts file.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrHostKeyUnknown is a host absent from its known_hosts file.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrUnreachable is a host that does not answer.
	ErrUnreachable = errors.New("host unreachable")
	// ErrSSHAuth is a host that refused the key.
	ErrSSHAuth = errors.New("ssh authentication refused")
	// ErrRegistryUnreachable is a registry a host's engine could not reach (down,
	// refusing connections, or answering 502/503).
	ErrRegistryUnreachable = errors.New("registry unreachable")
	// ErrEngineUnreachable is a host's Docker engine that does not answer.
	ErrEngineUnreachable = errors.New("docker engine unreachable")
)

// infrastructure names the kind of an infrastructure failure (one that a later
// attempt may not meet), or returns "" for a failure of the work itself.
func infrastructure(err error) string {
	switch {
	case errors.Is(err, ErrUnreachable):
		return "host-unreachable"
	case errors.Is(err, ErrRegistryUnreachable), errors.Is(err, registry.ErrUnreachable):
		return "registry-unreachable"
	case errors.Is(err, ErrEngineUnreachable):
		return "engine-unreachable"
	}
	return ""
}

// dockerError names the kind of a failed docker command from its message.
func dockerError(msg string) error {
	switch {
	case strings.Contains(msg, "Cannot connect to the Docker daemon"), strings.Contains(msg, "Is the docker daemon running"):
		return ErrEngineUnreachable
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"),
		strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "TLS handshake timeout"),
		strings.Contains(msg, "502 Bad Gateway"), strings.Contains(msg, "503 Service Unavailable"),
		strings.Contains(msg, "connection reset by peer"):
		return ErrRegistryUnreachable
	}
	return nil
}

// HostError is a failed command on a host, with the kind of failure.
type HostError struct {
	Host string
	Kind error // one of the Err… kinds, or nil for the command's own failure
	Msg  string
}

func (e *HostError) Error() string {
	if e.Kind != nil {
		return fmt.Sprintf("host %s: %v: %s", e.Host, e.Kind, e.Msg)
	}
	return fmt.Sprintf("host %s: %s", e.Host, e.Msg)
}

// Unwrap gives the kind to errors.Is.
func (e *HostError) Unwrap() error { return e.Kind }

// runner runs commands on one host: here, or over SSH with a pinned host key.
type runner struct {
	name string
	h    Host
	log  *slog.Logger // nil: no log
	// control, when set, is a folder for SSH master connections: one connection per
	// host is reused by the commands that follow within 30s.
	control string
}

// run runs argv on the host with stdin and returns its trimmed standard output. Docker
// commands (argv[0] == "docker") get the host's DOCKER_HOST.
func (r *runner) run(ctx context.Context, stdin io.Reader, argv ...string) (string, error) {
	out, err := r.output(ctx, stdin, argv...)
	return strings.TrimSpace(out), err
}

// output is run without trimming the output.
func (r *runner) output(ctx context.Context, stdin io.Reader, argv ...string) (string, error) {
	var cmd *exec.Cmd
	if r.h.SSH == "" {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = os.Environ()
		if isDocker(argv[0]) {
			cmd.Env = append(cmd.Env, r.h.dockerEnv()...)
		}
	} else {
		remote := argv
		if env := r.h.dockerEnv(); isDocker(argv[0]) && len(env) > 0 {
			remote = append(append([]string{"env"}, env...), argv...)
		}
		cmd = exec.CommandContext(ctx, "ssh", append(r.sshArgs(), "--", shellQuote(remote))...)
	}
	var out, errb bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	if r.log != nil {
		r.log.Debug("deployer: host command", "host", r.name, "command", argv[0], "arg", argv[min(1, len(argv)-1)], "duration", time.Since(start), "err", err)
	}
	if err == nil {
		return out.String(), nil
	}
	msg := lastLines(errb.String(), 8)
	if msg == "" {
		msg = err.Error()
	}
	var ee *exec.ExitError
	if r.h.SSH != "" && errors.As(err, &ee) && ee.ExitCode() == 255 {
		return "", r.sshError(msg)
	}
	e := &HostError{Host: r.name, Msg: fmt.Sprintf("%s: %s", argv[0], msg)}
	if isDocker(argv[0]) {
		e.Kind = dockerError(msg)
	}
	return "", e
}

func (r *runner) sshArgs() []string {
	user, host, port, _ := splitSSH(r.h.SSH)
	args := []string{
		"-p", strconv.Itoa(port), "-l", user, "-i", r.h.KeyFile,
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + r.h.KnownHostsFile,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
		"-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
		"-F", "/dev/null", host,
	}
	if r.control != "" {
		args = append(args[:len(args)-1], "-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(r.control, "%C"),
			"-o", "ControlPersist=30s", host)
	}
	return args
}

// closeMaster ends the host's SSH master connection, if any.
func (r *runner) closeMaster() {
	if r.h.SSH == "" || r.control == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exec.CommandContext(ctx, "ssh", append([]string{"-O", "exit"}, r.sshArgs()...)...).Run()
}

// sshError names what went wrong from ssh's own message (exit status 255).
func (r *runner) sshError(msg string) error {
	e := &HostError{Host: r.name, Msg: msg}
	switch {
	case strings.Contains(msg, "REMOTE HOST IDENTIFICATION HAS CHANGED"), strings.Contains(msg, "Host key for") && strings.Contains(msg, "has changed"):
		e.Kind = ErrHostKeyChanged
		e.Msg = fmt.Sprintf("%s answers with another key than the one in %s: check the host, then update that file", r.h.SSH, r.h.KnownHostsFile)
	case strings.Contains(msg, "Host key verification failed"), strings.Contains(msg, "No ") && strings.Contains(msg, "host key is known"):
		e.Kind = ErrHostKeyUnknown
		e.Msg = fmt.Sprintf("%s is not in %s (keys are never trusted on first use): check its key, then add it", r.h.SSH, r.h.KnownHostsFile)
	case strings.Contains(msg, "Permission denied"):
		e.Kind = ErrSSHAuth
	case strings.Contains(msg, "Connection refused"), strings.Contains(msg, "timed out"),
		strings.Contains(msg, "No route to host"), strings.Contains(msg, "Could not resolve"),
		strings.Contains(msg, "Network is unreachable"), strings.Contains(msg, "Connection closed"),
		strings.Contains(msg, "Connection reset"):
		e.Kind = ErrUnreachable
	}
	return e
}

// writeFile replaces path on the host with content, atomically (a rename).
func (r *runner) writeFile(ctx context.Context, path string, content []byte) error {
	_, err := r.run(ctx, bytes.NewReader(content), "sh", "-c", `cat > "$1.kiln-new" && mv -f "$1.kiln-new" "$1"`, "sh", path)
	return err
}

// readFile reads path on the host, byte for byte; a missing file is empty.
func (r *runner) readFile(ctx context.Context, path string) (string, error) {
	return r.output(ctx, nil, "sh", "-c", `if [ -e "$1" ]; then cat "$1"; fi`, "sh", path)
}

// isDocker reports whether a command is a docker client (docker, docker-compose), which
// gets the host's DOCKER_HOST and DOCKER_CONFIG.
func isDocker(cmd string) bool { return cmd == "docker" || cmd == "docker-compose" }

// dockerEnv is the environment of the host's docker commands.
func (h Host) dockerEnv() []string {
	var env []string
	if h.DockerHost != "" {
		env = append(env, "DOCKER_HOST="+h.DockerHost)
	}
	if h.DockerConfig != "" {
		env = append(env, "DOCKER_CONFIG="+h.DockerConfig)
	}
	return env
}

// shellQuote makes argv one POSIX shell command line.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
