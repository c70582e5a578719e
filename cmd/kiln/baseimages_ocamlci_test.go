package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/registry/registrytest"
	"github.com/kiln-ci/kiln/services/baseimages"
	"github.com/kiln-ci/kiln/services/baseimages/baseimagestest"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/ocamlci"
)

// TestOCamlCIOnABaseImage builds the Debian 12 compiler image with dune, findlib and
// odoc with the base-images service (its opam image's steps are the base-images
// tests' own, kept in the test cache), publishes it to a registry with
// authentication, and has ocaml-ci, started as kiln serve starts it with
// --platform-image, build its sample project on the published tag: pulled by the
// local worker's builder into an empty image store, built with runc. It lives here
// as it runs two services, which may not import each other.
func TestOCamlCIOnABaseImage(t *testing.T) {
	testenv.Short(t, "builds a base image and a project on it")
	b := baseimagestest.Builder(t)
	reg := registrytest.Start(t, registrytest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	cfg, err := baseimages.ParseConfig([]byte("arches: [amd64]\ndistros: [{name: debian-12}]\npackages: [ocaml-dune, ocaml-findlib, ocaml-odoc]\n"))
	if err != nil {
		t.Fatal(err)
	}
	plan := cfg.Plan()
	for _, bd := range plan.Builds {
		imagetest.DebianWith(t, bd.Rootfs("")) // made once in the test cache (.ci/baseimages.go makes it)
	}
	var buildLog testenv.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			l := buildLog.String()
			t.Logf("base image build log (end):\n%s", l[max(0, len(l)-6000):])
		}
	})
	exp := &baseimages.Exporter{Dir: baseimagestest.ExportDir(t, "export-ocaml-ci"), Runner: baseimages.LocalRunner{Builder: b}}
	gitDir, commit := baseimagestest.SmallOpamRepository(t)
	start := time.Now()
	built, err := exp.BuildAll(ctx, &buildLog, imagetest.Store(t), plan, nil, gitDir, commit, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := registry.ReadCredentials(reg.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	client, err := registry.New(registry.Options{Credentials: creds, Insecure: true, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	pub := &baseimages.Publisher{Client: client, Repository: reg.Repo("ocaml/opam"), Staging: reg.Repo("ocaml/opam-staging"), Exporter: exp}
	if _, err := pub.Publish(ctx, &buildLog, plan, built, &baseimages.Index{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("debian-12-ocaml-4.13 with %v built and published in %s", plan.Images[1].Packages, time.Since(start).Round(time.Second))

	// ocaml-ci as kiln serve runs it, with --platform-image; its worker's builder pulls
	// the tag into an empty image store with the registry's credentials, as `docker
	// login` stores them.
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	ref := pub.Repository + ":debian-12-ocaml-4.13"
	const platform = "debian-12-4.13_amd64"
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	svc := ocamlci.ServiceKind.Flags(fs)
	if err := fs.Parse([]string{"--no-arm64", "--platform-image", platform + "=" + ref}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	e, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), DefaultPoolSlots: 4})
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := host.StartFleet(ctx, host.FleetOptions{Listen: "127.0.0.1:0", Pools: host.Pools([]host.Service{svc}), LocalWorkers: 1,
		Capacity: 2, StateDir: state, Images: filepath.Join(state, "images")})
	if err != nil {
		t.Fatal(err)
	}
	env := &host.Env{Engine: e, Fleet: fleet.Client, Forges: &forges.Set{}, StateDir: state, BaseURL: "http://ci.test",
		Images: filepath.Join(state, "images"), Logger: slog.Default(), Register: prometheus.NewRegistry(),
		Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{})}
	running, err := svc.Start(ctx, env)
	if err != nil {
		fleet.Close()
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { defer close(runDone); e.Run(ctx, running.Pipeline) }()
	t.Cleanup(func() { cancel(); <-runDone; running.Close(); fleet.Close(); e.Close() })
	mux := http.NewServeMux()
	for pattern, h := range running.Routes {
		mux.Handle(pattern, h)
	}
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)

	out, err := exec.Command("git", "-C", filepath.Join(state, "sample", "hello"), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	commitURL := web.URL + "/api/git/local/hello/commit/" + strings.TrimSpace(string(out))
	var c commitView
	waitJSON(t, commitURL, &c, func() bool { return c.Commit.State != forge.Queued && c.Commit.State != forge.Running }, 20*time.Minute)
	states := map[string]forge.State{}
	for _, v := range c.Variants {
		states[v.Name] = v.State
	}
	if c.Commit.State != forge.Passed {
		t.Fatalf("sample commit: %s (%s)\n%s\nvariants: %v", c.Commit.State, c.Commit.Title, c.Commit.Summary, states)
	}
	for _, want := range []string{platform, "(lint-doc)"} {
		if states[want] != forge.Passed {
			t.Errorf("variant %s: %q, want passed (all: %v)", want, states[want], states)
		}
	}
	var v struct{ Log string }
	waitJSON(t, commitURL+"/variant/"+platform, &v, func() bool { return v.Log != "" }, time.Minute)
	for _, want := range []string{"FROM " + ref, "test passed"} {
		if !strings.Contains(v.Log, want) {
			t.Errorf("the build's log lacks %q:\n%s", want, v.Log)
		}
	}
}

// commitView is what ocaml-ci's API says of a commit.
type commitView struct {
	Commit struct {
		State          forge.State
		Title, Summary string
	}
	Variants []struct {
		Name  string
		State forge.State
	}
}

// waitJSON reads the JSON at url into v until done says so.
func waitJSON(t *testing.T, url string, v any, done func() bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(v)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && done() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %s, %+v (%v) after %s", url, resp.Status, v, err, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
