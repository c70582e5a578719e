package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry/registrytest"
)

func TestMain(m *testing.M) { registrytest.Main(m, dockertest.Stop) }

// client returns a client of the shared test registry with its credentials.
func client(t *testing.T) (*Client, *registrytest.Registry) {
	t.Helper()
	reg := registrytest.Shared(t)
	creds, err := ReadCredentials(reg.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Credentials: creds, Insecure: true, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPushTagDigest(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	repo := reg.Repo("push/tag")
	img := randomImage(t)
	want, _ := img.Digest()
	d, err := c.Push(ctx, repo, img)
	if err != nil {
		t.Fatal(err)
	}
	if d != want {
		t.Fatalf("Push returned %s, the image's digest is %s", d, want)
	}
	if _, err := c.Digest(ctx, repo+":latest"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before tagging, Digest(latest) = %v, want ErrNotFound", err)
	}
	if err := c.Tag(ctx, repo, d, "latest", "v1"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{repo + ":latest", repo + ":v1", repo + "@" + d.String()} {
		t.Run(ref[len(reg.Addr):], func(t *testing.T) {
			got, err := c.Digest(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if got != d {
				t.Errorf("Digest = %s, want %s", got, d)
			}
		})
	}
	before := c.Uploaded()
	if _, err := c.Push(ctx, repo, img); err != nil {
		t.Fatal(err)
	}
	if n := c.Uploaded() - before; n != 0 {
		t.Errorf("pushing an unchanged image again uploaded %d bytes", n)
	}
	if got := testenv.Metrics(t, c.o.Registerer.(prometheus.Gatherer))["kiln_registry_operations_total{op=push,outcome=ok}"]; got != 2 {
		t.Errorf("kiln_registry_operations_total{op=push,outcome=ok} = %v, want 2", got)
	}
}

func TestPushIndex(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	public := reg.Repo("index/public")
	amd, arm := randomImage(t), randomImage(t)
	dAmd, err := c.Push(ctx, reg.Repo("index/staging-amd64"), amd)
	if err != nil {
		t.Fatal(err)
	}
	dArm, err := c.Push(ctx, reg.Repo("index/staging-arm64"), arm)
	if err != nil {
		t.Fatal(err)
	}
	ms := []Manifest{
		{Digest: dAmd, From: reg.Repo("index/staging-amd64"), Platform: v1.Platform{OS: "linux", Architecture: "amd64"}},
		{Digest: dArm, From: reg.Repo("index/staging-arm64"), Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
	}
	d, err := c.PushIndex(ctx, public, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, public, d, "bookworm"); err != nil {
		t.Fatal(err)
	}
	idx, err := c.Index(ctx, public+":bookworm")
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range idx.Manifests {
		t.Run(ms[i].Platform.Architecture, func(t *testing.T) {
			if m.Digest != ms[i].Digest || m.Platform.Architecture != ms[i].Platform.Architecture {
				t.Errorf("index entry %d = %s %s, want %s %s", i, m.Digest, m.Platform.Architecture, ms[i].Digest, ms[i].Platform.Architecture)
			}
			if _, err := c.Digest(ctx, public+"@"+m.Digest.String()); err != nil {
				t.Errorf("the index's image is not in its repository: %v", err)
			}
		})
	}
}

// TestIndexNeverHalfPublished pushes one architecture, lets the other's push fail,
// and checks that no index (and no tag) names the missing image.
func TestIndexNeverHalfPublished(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	repo := reg.Repo("half/public")
	amd := randomImage(t)
	dAmd, err := c.Push(ctx, repo, amd)
	if err != nil {
		t.Fatal(err)
	}
	// The arm64 push goes to a registry that refuses it.
	refusing := registrytest.Start(t, registrytest.Options{ReadOnly: true})
	rc, err := New(Options{Credentials: Credentials{refusing.Username, refusing.Password}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	arm := randomImage(t)
	dArm, _ := arm.Digest()
	if _, err := rc.Push(ctx, refusing.Repo("half/public"), arm); err == nil {
		t.Fatal("push to a read-only registry succeeded")
	}
	_, err = c.PushIndex(ctx, repo, []Manifest{
		{Digest: dAmd, Platform: v1.Platform{OS: "linux", Architecture: "amd64"}},
		{Digest: dArm, Platform: v1.Platform{OS: "linux", Architecture: "arm64"}},
	}, nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), dArm.String()) {
		t.Fatalf("PushIndex with a missing image = %v, want ErrNotFound naming %s", err, dArm)
	}
	tags, err := c.Tags(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 0 {
		t.Errorf("tags after a failed index: %v, want none", tags)
	}
	manifests, err := filepath.Glob(filepath.Join(reg.Dir, "data/docker/registry/v2/repositories/half/public/_manifests/revisions/sha256/*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(manifests) != 1 || filepath.Base(manifests[0]) != dAmd.Hex {
		t.Errorf("manifests in the repository: %v, want only the amd64 image %s", manifests, dAmd.Hex)
	}
}

func TestErrors(t *testing.T) {
	_, reg := client(t)
	ctx := context.Background()
	readOnly := registrytest.Start(t, registrytest.Options{ReadOnly: true})
	denying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`))
	}))
	defer denying.Close()
	unreachable := registrytest.RefusedAddr(t)
	good := Credentials{reg.Username, reg.Password}
	for _, tc := range []struct {
		name  string
		creds Credentials
		repo  string
		want  error
	}{
		{"unreachable", good, unreachable + "/x/y", ErrUnreachable},
		{"wrong password", Credentials{reg.Username, "not-the-password-5f3a"}, reg.Repo("errors/a"), ErrUnauthorized},
		{"no credentials", Credentials{}, reg.Repo("errors/a"), ErrUnauthorized},
		{"read-only registry", Credentials{readOnly.Username, readOnly.Password}, readOnly.Repo("errors/a"), ErrDenied},
		{"denied", good, strings.TrimPrefix(denying.URL, "http://") + "/errors/a", ErrDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Options{Credentials: tc.creds, Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Push(ctx, tc.repo, randomImage(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Push = %v, want %v", err, tc.want)
			}
			var re *Error
			if !errors.As(err, &re) || !strings.Contains(err.Error(), "registry "+registryOf(tc.repo)) || !strings.Contains(err.Error(), "repository errors/a") && !strings.Contains(err.Error(), "repository x/y") {
				t.Errorf("error %q does not name the registry and repository", err)
			}
			if tc.creds.Password != "" && strings.Contains(err.Error(), tc.creds.Password) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	t.Run("missing tag", func(t *testing.T) {
		c, _ := client(t)
		if _, err := c.Digest(ctx, reg.Repo("errors/none:latest")); !errors.Is(err, ErrNotFound) {
			t.Errorf("Digest of a missing tag = %v, want ErrNotFound", err)
		}
	})
}

func TestDiskFull(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{DiskBytes: 1 << 20})
	c, err := New(Options{Credentials: Credentials{reg.Username, reg.Password}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(4<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Push(context.Background(), reg.Repo("full/a"), img)
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Push to a full registry = %v, want ErrDiskFull\n%s", err, reg.Log())
	}
	if !strings.Contains(err.Error(), "registry "+reg.Addr+", repository full/a") {
		t.Errorf("error %q does not name the registry and repository", err)
	}
}

// TestDiskFullNotRetried: a registry whose storage broke on a full disk answers
// later requests with bare 500s; the push reports the first answer, which says
// why, after one upload.
func TestDiskFullNotRetried(t *testing.T) {
	var uploads atomic.Int32
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodHead:
			if uploads.Load() > 0 {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/"):
			uploads.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"write /var/lib/registry/x: no space left on device"}]}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer broken.Close()
	c, err := New(Options{Insecure: true, Jobs: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Push(context.Background(), strings.TrimPrefix(broken.URL, "http://")+"/full/a", randomImage(t))
	if !errors.Is(err, ErrDiskFull) {
		t.Errorf("Push = %v, want ErrDiskFull", err)
	}
	if n := uploads.Load(); n != 1 {
		t.Errorf("%d uploads started, want 1", n)
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		want          Credentials
		ok            bool
	}{
		{"user and password", "kiln:s3cret\n", Credentials{"kiln", "s3cret"}, true},
		{"colon in password", "kiln:a:b", Credentials{"kiln", "a:b"}, true},
		{"no colon", "s3cret\n", Credentials{}, false},
		{"two lines", "kiln:s3cret\nother:x\n", Credentials{}, false},
		{"empty", "", Credentials{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadCredentials(p)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ReadCredentials = %v, %v; want %v, ok=%v", got, err, tc.want, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the file's content", err)
			}
			if strings.Contains(got.String(), "s3cret") {
				t.Errorf("Credentials print as %q", got)
			}
		})
	}
}

// TestClientsShareMetrics makes two clients on one registerer, as a service making a
// client per operation does: both count into the same metrics.
func TestClientsShareMetrics(t *testing.T) {
	_, reg := client(t)
	r := prometheus.NewRegistry()
	ctx := context.Background()
	for i, repo := range []string{"metrics/a", "metrics/b"} {
		c, err := New(Options{Credentials: Credentials{reg.Username, reg.Password}, Insecure: true, Registerer: r})
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if _, err := c.Push(ctx, reg.Repo(repo), randomImage(t)); err != nil {
			t.Fatal(err)
		}
	}
	m := testenv.Metrics(t, r)
	if got := m["kiln_registry_operations_total{op=push,outcome=ok}"]; got != 2 {
		t.Errorf("kiln_registry_operations_total{op=push,outcome=ok} = %v, want 2", got)
	}
	if got := m["kiln_registry_uploaded_bytes_total{}"]; got < 2*2048 {
		t.Errorf("kiln_registry_uploaded_bytes_total = %v, want at least the two images' layers (4096)", got)
	}
}
