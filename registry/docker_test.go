package registry

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
)

// dockerCLI runs docker against engine e with the client configuration folder config
// (the registry's credentials).
func dockerCLI(t *testing.T, e *docker.Engine, config string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+config)
	if e.Host != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+e.Host)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", args[0], err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestDockerPullRun assembles the test Debian base and a copy of it made now (same
// digest), pushes it to the registry with
// authentication, then pulls and runs it with a real Docker engine (which accepts
// plain HTTP from a registry on 127.0.0.0/8 without --insecure-registry) given the
// registry's credentials in its client configuration.
func TestDockerPullRun(t *testing.T) {
	base := imagetest.Debian(t)
	engine := dockertest.Engine(t)
	c, reg := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The copy has the same files, owners, modes, links and attributes, and new times.
	copied := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-r", "--preserve=mode,ownership,links,xattr", "--no-dereference", base.Rootfs, copied).CombinedOutput(); err != nil {
		t.Fatalf("copy the base's root filesystem: %v\n%s", err, out)
	}
	var digests [2]v1.Hash
	var a *Assembly
	for i, dir := range []string{copied, base.Rootfs} {
		var err error
		a, err = Assemble(ctx, Rootfs{Dir: dir}, ConfigOf(base), AssembleOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if digests[i], err = a.Image.Digest(); err != nil {
			t.Fatal(err)
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("assemblies of the Debian base and of its copy: %s and %s", digests[1], digests[0])
	}
	repo := reg.Repo("docker/debian")
	d, err := c.Push(ctx, repo, a.Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, repo, d, "bookworm"); err != nil {
		t.Fatal(err)
	}
	config := reg.DockerConfig(t)
	ref := repo + ":bookworm"
	t.Cleanup(func() { exec.Command("docker", "-H", engine.Host, "rmi", "-f", ref).Run() })
	dockerCLI(t, engine, config, "pull", ref)
	if got := dockerCLI(t, engine, config, "image", "inspect", "--format", "{{index .RepoDigests 0}}", ref); got != repo+"@"+d.String() {
		t.Errorf("the engine pulled %s, the registry has %s@%s", got, repo, d)
	}
	for _, tc := range []struct {
		name string
		cmd  []string
		want string
	}{
		{"debian version", []string{"cat", "/etc/debian_version"}, "12."},
		{"user", []string{"id", "-u"}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := dockerCLI(t, engine, config, append([]string{"run", "--rm", "--network", "none", ref}, tc.cmd...)...)
			if !strings.HasPrefix(out, tc.want) {
				t.Errorf("%v printed %q, want %q…", tc.cmd, out, tc.want)
			}
		})
	}
}
