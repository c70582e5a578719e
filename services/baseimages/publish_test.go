package baseimages

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/registry/registrytest"
)

func TestMain(m *testing.M) { registrytest.Main(m, dockertest.Stop) }

// fakeBuilds are random images standing for the builds of p, kept in exp's layout.
func fakeBuilds(t *testing.T, exp *Exporter, p Plan, size int64) map[string]Built {
	t.Helper()
	out := map[string]Built{}
	lp, err := exp.layout()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Builds {
		img, err := random.Image(size, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		bt := Built{Name: b.Name(), Image: b.Image.Name(), Arch: b.Arch.Name, Digest: d.String(), Packages: map[string]string{"bash": "5.2"},
			Inputs: Inputs{OpamCommit: strings.Repeat("a", 40), OpamDate: time.Unix(1e9, 0), Rootfs: "kiln/debian:x", RootfsID: "sha256:" + strings.Repeat("b", 64), Spec: "sha256:" + strings.Repeat("c", 64)}}
		if bt.SBOM, err = sbom(b, bt); err != nil {
			t.Fatal(err)
		}
		if bt.Provenance, err = provenance(b, bt); err != nil {
			t.Fatal(err)
		}
		out[b.Name()] = bt
	}
	return out
}

func testPlan(t *testing.T, yaml string) Plan {
	t.Helper()
	c, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c.Plan()
}

func publisher(t testing.TB, reg *registrytest.Registry, creds registry.Credentials, repo string) *Publisher {
	t.Helper()
	c, err := registry.New(registry.Options{Credentials: creds, Insecure: true, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return &Publisher{Client: c, Repository: reg.Repo(repo), Staging: reg.Repo(repo + "-staging"), Exporter: &Exporter{Dir: t.TempDir()}}
}

func credentials(t testing.TB, reg *registrytest.Registry) registry.Credentials {
	t.Helper()
	cr, err := registry.ReadCredentials(reg.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// TestPublishBadRegistry publishes to registries that fail: each error says what
// went wrong, and no tag of the public repository exists afterwards.
func TestPublishBadRegistry(t *testing.T) {
	testenv.RequireCommand(t, "docker-registry", "htpasswd")
	p := testPlan(t, "arches: [amd64, arm64]\ndistros: [{name: debian-12}]")
	cases := []struct {
		name  string
		setup func(t *testing.T) (*Publisher, *registrytest.Registry)
		size  int64
		kind  error
		want  string
	}{
		{"unreachable", func(t *testing.T) (*Publisher, *registrytest.Registry) {
			reg := registrytest.Shared(t)
			pub := publisher(t, reg, credentials(t, reg), "bad/unreachable")
			addr := registrytest.RefusedAddr(t) // refused, and no server can take the port
			pub.Repository, pub.Staging = addr+"/ocaml/opam", addr+"/ocaml/opam-staging"
			return pub, nil
		}, 1 << 10, registry.ErrUnreachable, "registry unreachable"},
		{"wrong credentials", func(t *testing.T) (*Publisher, *registrytest.Registry) {
			reg := registrytest.Shared(t)
			return publisher(t, reg, registry.Credentials{Username: reg.Username, Password: "wrong"}, "bad/creds"), reg
		}, 1 << 10, registry.ErrUnauthorized, "unauthorized"},
		{"read-only registry", func(t *testing.T) (*Publisher, *registrytest.Registry) {
			reg := registrytest.Start(t, registrytest.Options{ReadOnly: true})
			return publisher(t, reg, credentials(t, reg), "bad/readonly"), reg
		}, 1 << 10, registry.ErrDenied, "denied"},
		{"full disk", func(t *testing.T) (*Publisher, *registrytest.Registry) {
			testenv.RequireRoot(t)
			reg := registrytest.Start(t, registrytest.Options{DiskBytes: 3 << 20})
			return publisher(t, reg, credentials(t, reg), "bad/full"), reg
		}, 5 << 20, registry.ErrDiskFull, "disk full"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pub, reg := c.setup(t)
			builds := fakeBuilds(t, pub.Exporter, p, c.size)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := pub.Publish(ctx, io.Discard, p, builds, nil)
			if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
				if reg != nil {
					t.Logf("registry log:\n%s", reg.Log())
				}
				t.Fatalf("error %v, want %v", err, c.kind)
			}
			if !strings.Contains(err.Error(), "debian-12") {
				t.Errorf("error %v does not name the image", err)
			}
			if reg == nil {
				return
			}
			good := publisher(t, reg, credentials(t, reg), "unused")
			tags, err := good.Client.Tags(ctx, pub.Repository)
			if err != nil {
				t.Fatal(err)
			}
			if len(tags) > 0 {
				t.Errorf("after a failed publication the public repository has tags %v", tags)
			}
		})
	}
}

// TestPublishTagsAndDeprecation publishes a plan of random images twice (the second
// time nothing moves), then retires a distribution: its tags stay, deprecated.
func TestPublishTagsAndDeprecation(t *testing.T) {
	reg := registrytest.Shared(t)
	pub := publisher(t, reg, credentials(t, reg), "tags/ocaml/opam")
	key := filepath.Join(t.TempDir(), "cosign.key")
	if err := registry.GenerateKey(key, key+".pub"); err != nil {
		t.Fatal(err)
	}
	signer, err := registry.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	pub.Signer = signer
	ctx := context.Background()
	both := testPlan(t, "arches: [amd64, arm64]")
	builds := fakeBuilds(t, pub.Exporter, both, 256)
	ix := &Index{}
	steps := []struct {
		name       string
		plan       Plan
		pushed     int
		moved      []string
		deprecated []string
	}{
		{"first", both, 8, []string{"debian", "debian-12", "debian-12-ocaml-4.13", "debian-12-opam", "debian-13", "debian-13-ocaml-5.3", "debian-13-opam", "debian-ocaml-5.3", "latest"}, nil},
		{"again, unchanged", both, 0, nil, nil},
		{"debian-13 retired", testPlan(t, "arches: [amd64, arm64]\ndistros: [{name: debian-12}, {name: debian-13, retired: true}]"), 0,
			[]string{"debian", "debian-ocaml-4.13", "latest"}, []string{"debian-13", "debian-13-ocaml-5.3", "debian-13-opam"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var log bytes.Buffer
			rep, err := pub.Publish(ctx, &log, s.plan, builds, ix)
			if err != nil {
				t.Fatal(err)
			}
			ix.Update(s.plan, builds, rep)
			if len(rep.Pushed) != s.pushed {
				t.Errorf("pushed %v, want %d images", rep.Pushed, s.pushed)
			}
			if got := sortedKeys(rep.Tags); strings.Join(got, " ") != strings.Join(s.moved, " ") {
				t.Errorf("tags moved %v, want %v\n%s", got, s.moved, log.String())
			}
			slices.Sort(rep.Deprecated)
			if strings.Join(rep.Deprecated, " ") != strings.Join(s.deprecated, " ") {
				t.Errorf("deprecated %v, want %v", rep.Deprecated, s.deprecated)
			}
		})
	}
	t.Run("deprecated tags stay pullable and say why", func(t *testing.T) {
		why, err := pub.Client.Deprecation(ctx, pub.Repository+":debian-13-ocaml-5.3")
		if err != nil || why != "debian-13 is retired" {
			t.Errorf("deprecation %q, %v", why, err)
		}
		idx, err := pub.Client.Index(ctx, pub.Repository+":debian-13-ocaml-5.3")
		if err != nil || len(idx.Manifests) != 2 {
			t.Fatalf("index %+v, %v", idx, err)
		}
		if e := ix.Tags["debian-13-ocaml-5.3"]; e == nil || e.Deprecated == "" {
			t.Errorf("the index does not list debian-13-ocaml-5.3 as deprecated: %+v", e)
		}
	})
	t.Run("signatures", func(t *testing.T) {
		pubKey, err := registry.LoadPublicKey(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Client.Verify(ctx, pub.Repository+":debian-12-ocaml-4.13", pubKey); err != nil {
			t.Errorf("verify a published tag: %v", err)
		}
		// Tampered: a tag moved to an image nobody signed.
		img, _ := random.Image(64, 1)
		d, err := pub.Client.Push(ctx, pub.Repository, img)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Client.Tag(ctx, pub.Repository, d, "tampered"); err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Client.Verify(ctx, pub.Repository+":tampered", pubKey); !errors.Is(err, registry.ErrBadSignature) {
			t.Errorf("verify a tampered tag: %v, want %v", err, registry.ErrBadSignature)
		}
	})
}
