package deployer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kiln-ci/kiln/builder/docker"
)

// dockerCmd runs the docker command against e's engine.
func dockerCmd(ctx context.Context, e *docker.Engine, args ...string) error {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = os.Environ()
	if e.Host != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+e.Host)
	}
	cmd.Env = append(cmd.Env, e.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker %s: %v: %s", args[0], err, lastLines(string(out), 5))
	}
	return nil
}

// extractArtifact copies path out of image, pulled on the build engine r when
// needed, into a new folder under dir, and returns the file's path there.
func extractArtifact(ctx context.Context, r *runner, dir, image, path string) (string, error) {
	tmp, err := os.MkdirTemp(dir, "artifact-")
	if err != nil {
		return "", err
	}
	cname := "kiln-artifact-" + filepath.Base(tmp)
	out := filepath.Join(tmp, filepath.Base(path))
	if _, err := r.run(ctx, nil, "docker", "pull", "-q", image); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if _, err := r.run(ctx, nil, "docker", "create", "--name", cname, image, "true"); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	defer r.run(context.WithoutCancel(ctx), nil, "docker", "rm", "-f", cname)
	if _, err := r.run(ctx, nil, "docker", "cp", "--follow-link", cname+":"+path, out); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return out, nil
}
