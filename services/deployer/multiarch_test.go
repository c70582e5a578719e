package deployer

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/registry/registrytest"
	"github.com/kiln-ci/kiln/services/host"
)

// archSpec builds the web service for the architecture it runs on: it takes the
// binary of its architecture from the context and appends `uname -m` to the version
// it serves, so an answer says which architecture built the image.
const archSpec = `((from debian)
 (copy (src server-amd64 server-arm64 version) (dst /src/))
 (run (shell "mkdir -p /image && cp /src/server-$(dpkg --print-architecture) /image/server && echo $(cat /src/version) $(uname -m) > /image/version")))
`

// TestMultiArch deploys a service built from a spec for amd64 and arm64 on the
// fleet's two pools (local workers, as kiln serve runs them; arm64 under qemu):
// the image published is an index of both, the amd64 one serves in production, and
// the arm64 one, run under qemu, says it was built on arm64.
func TestMultiArch(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "mmdebstrap", "docker", "go")
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-aarch64"); err != nil {
		if testenv.InCI() {
			t.Fatalf("no qemu-aarch64 binfmt handler (qemu-user-static): %v", err)
		}
		t.Skipf("no qemu-aarch64 binfmt handler (qemu-user-static): %v", err)
	}
	amd64 := imagetest.Debian(t)
	arm64 := imagetest.DebianWith(t, image.DebianOptions{Suite: "bookworm", Arch: "arm64"})
	engine := dockertest.Engine(t)
	reg := registrytest.Shared(t)
	front := startNginx(t)
	repo := newWebRepo(t)
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(repo.Dir, "server-"+arch), "./testdata/web")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the web service for %s: %v: %s", arch, err, out)
		}
	}
	os.WriteFile(filepath.Join(repo.Dir, "deploy.spec"), []byte(archSpec), 0o644)
	commit := repo.commit(t, "v1")

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fleet, err := host.StartFleet(ctx, host.FleetOptions{Listen: "127.0.0.1:0", Pools: []string{"linux-x86_64", "linux-arm64"},
		LocalWorkers: 1, Capacity: 1, StateDir: dir, Images: imagetest.Store(t).Root(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	store, err := snapshot.Open(filepath.Join(dir, "builder", "store"), "")
	if err != nil {
		t.Fatal(err)
	}
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	name := "kiln-test-multiarch-" + suffix
	cfg := &Config{
		Poll: Duration(time.Hour), HealthEvery: Duration(time.Hour), BuildDockerHost: engine.Host,
		Registry: RegistryConfig{Address: reg.Addr, CredentialsFile: reg.CredentialsFile, Insecure: true},
		Hosts:    map[string]Host{"here": {DockerHost: engine.Host}},
		Services: []ServiceConfig{{Name: "web", Repo: repo.Dir, Image: "deployer-test/multiarch-" + suffix,
			Spec: "deploy.spec", Archs: []string{"amd64", "arm64"}, From: map[string]string{"amd64": amd64.Ref, "arm64": arm64.Ref},
			ImageRoot: "/image", ImageConfig: ImageSettings{Entrypoint: []string{"/server"}},
			Health: HealthConfig{Path: "/health", Expect: "ok", Deadline: Duration(30 * time.Second)},
			Production: Target{Host: "here", Container: &ContainerTarget{Name: name, Network: "host", Slots: [2]int{freePort(t), freePort(t)},
				Drain: Duration(100 * time.Millisecond), Proxy: ProxyConfig{UpstreamFile: front.UpstreamFile, Upstream: "web", Reload: front.Reload, URL: front.URL}}}}},
	}
	t.Cleanup(func() { removeInstances(engine.Host, name) })
	w := &world{cfg: cfg, cfgFile: filepath.Join(dir, "deployer.yaml"), logs: &testenv.Buffer{}}
	w.writeConfig(t)
	d, err := New(Options{ConfigFile: w.cfgFile, StateDir: filepath.Join(dir, "state"), Register: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(w.logs, nil)), Jobs: true, Specs: FleetBuilder{Fleet: fleet.Client, Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	w.d = d
	w.engine, w.console = startEngine(t, d, dir)

	start := time.Now()
	d.Poll(ctx)
	t.Logf("commit to live, built for two architectures: %v", time.Since(start).Round(100*time.Millisecond))
	b := d.st.build("web", commit)
	if b == nil || b.State != "passed" {
		t.Fatalf("build %+v\n%s", b, w.logs.String())
	}
	t.Logf("two-architecture build (both at once): %v", b.Finished.Sub(b.Started).Round(100*time.Millisecond))
	if log, err := os.ReadFile(filepath.Join(dir, "state", "logs", "web-"+commit+".log")); err == nil {
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, ": built in ") {
				t.Logf("%s", l)
			}
		}
	}
	h := lastRecords(d, 1)
	if len(h) != 1 || h[0].Outcome != OutcomeLive || h[0].Stage != "production" {
		t.Fatalf("history %+v\n%s", h, w.logs.String())
	}
	if got, err := get(front.URL + "/"); err != nil || got != "v1 x86_64" {
		t.Errorf("production answers %q (%v), want the amd64 image's %q", got, err, "v1 x86_64")
	}

	t.Run("the index lists both architectures", func(t *testing.T) {
		c, err := registry.New(registry.Options{Credentials: mustCredentials(t, reg.CredentialsFile), Insecure: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := c.Index(ctx, reg.Addr+"/"+cfg.Services[0].Image+"@"+h[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		var archs []string
		for _, m := range idx.Manifests {
			archs = append(archs, m.Platform.OS+"/"+m.Platform.Architecture)
			if m.Platform.Architecture == "arm64" {
				runArm64(t, engine.Host, d.dockerConfig(), reg.Addr+"/"+cfg.Services[0].Image+"@"+m.Digest.String())
			}
		}
		slices.Sort(archs)
		if strings.Join(archs, " ") != "linux/amd64 linux/arm64" {
			t.Errorf("index platforms %v, want linux/amd64 and linux/arm64", archs)
		}
	})
	t.Run("each architecture is an engine job with its builder log", func(t *testing.T) {
		jobs, err := w.engine.Query(current.Query{Op: OpBuildArch})
		if err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, j := range jobs {
			labels = append(labels, j.Label)
			w.job(t, j.ID, current.JobOK, "")
			w.jobPage(t, j.ID, "dpkg --print-architecture")
		}
		slices.Sort(labels)
		if want := "build web " + short(commit) + " for amd64, build web " + short(commit) + " for arm64"; strings.Join(labels, ", ") != want {
			t.Errorf("build jobs %q, want %q", labels, want)
		}
		w.jobPage(t, b.Job, "amd64: built", "arm64: built")
		w.jobPage(t, b.PushJob, "amd64: pushed", "arm64: pushed")
	})
}

func mustCredentials(t *testing.T, file string) registry.Credentials {
	t.Helper()
	c, err := registry.ReadCredentials(file)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runArm64 runs the arm64 image (under qemu) on the engine, with the docker client
// folder the deployer logged in to the registry with, and checks that it serves the
// version its arm64 build wrote.
func runArm64(t *testing.T, dockerHost, dockerConfig, ref string) {
	t.Helper()
	port := freePort(t)
	name := "kiln-test-arm64-" + strconv.Itoa(port)
	docker := func(args ...string) (string, error) {
		cmd := exec.Command("docker", args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost, "DOCKER_CONFIG="+dockerConfig)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := docker("run", "-d", "--name", name, "--network", "host", "-e", "PORT="+strconv.Itoa(port), ref); err != nil {
		t.Fatalf("run the arm64 image: %v: %s", err, out)
	}
	t.Cleanup(func() { docker("rm", "-f", name) })
	waitServes(t, "http://127.0.0.1:"+strconv.Itoa(port), "v1 aarch64")
}
