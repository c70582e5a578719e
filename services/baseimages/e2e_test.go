package baseimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/registry/registrytest"
	"github.com/kiln-ci/kiln/services/baseimages/baseimagestest"
)

// buildLog receives build logs besides the harness (io.Discard; a file to watch
// with KILN_BASEIMAGES_LOG).
var buildLog io.Writer = io.Discard

func init() {
	if p := os.Getenv("KILN_BASEIMAGES_LOG"); p != "" {
		if f, err := os.Create(p); err == nil {
			buildLog = f
		}
	}
}

// harness builds images with a builder and an export folder kept in the test cache,
// so that a warm run (and the arm64 images, slow under qemu) reuse their steps and
// exports.
type harness struct {
	t       *testing.T
	builder *builder.Builder
	exp     *Exporter
	work    string
	log     testenv.Buffer
}

func newHarness(t *testing.T) *harness {
	b := baseimagestest.Builder(t)
	h := &harness{t: t, builder: b, work: t.TempDir()}
	h.exp = &Exporter{Dir: baseimagestest.ExportDir(t, "export"), Runner: LocalRunner{Builder: b}}
	t.Cleanup(func() {
		if t.Failed() {
			log := h.log.String()
			t.Logf("build log (end):\n%s", log[max(0, len(log)-8000):])
		}
	})
	return h
}

// make builds every build of p from the opam repository at commit.
func (h *harness) make(p Plan, releases map[string]string, gitDir, commit string) map[string]Built {
	h.t.Helper()
	for _, b := range p.Builds {
		if releases[b.Image.Distro.Name] == "" {
			imagetest.DebianWith(h.t, b.Rootfs("")) // made once in the test cache (.ci/baseimages.go makes them)
		}
	}
	out, err := h.exp.BuildAll(context.Background(), io.MultiWriter(&h.log, buildLog), imagetest.Store(h.t), p, releases, gitDir, commit, h.work)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// newRelease registers under the name of o with release date release a copy of o's
// root filesystem with one more file, as a Debian point release would bring.
func newRelease(t *testing.T, o image.DebianOptions, release string) {
	t.Helper()
	st := imagetest.Store(t)
	name, _ := o.LocalName()
	named := o
	named.Name = name + "-" + release
	newName, _ := named.LocalName()
	if _, err := st.Resolve(context.Background(), newName); err == nil {
		return
	}
	base, err := st.Resolve(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	extra := t.TempDir()
	os.MkdirAll(filepath.Join(extra, "etc"), 0o755)
	os.WriteFile(filepath.Join(extra, "etc/kiln-test-release"), []byte(release+"\n"), 0o644)
	fixed := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(extra, "etc/kiln-test-release"), fixed, fixed)
	cmd := exec.Command("tar", "--sort=name", "--numeric-owner", "--xattrs", "-cf", "-", "-C", base.Rootfs, ".", "-C", extra, "./etc/kiln-test-release")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Import(context.Background(), newName, out, base.Config); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestEndToEnd builds the default matrix (Debian 12 and 13 with their OCaml, amd64
// and arm64 under qemu), publishes it to a registry with authentication, pulls and
// runs it with Docker on both architectures, checks its SBOM and signatures, then
// rebuilds it unchanged (nothing published) and with a new Debian 13 release (only
// Debian 13's images and tags move).
func TestEndToEnd(t *testing.T) {
	testenv.Short(t, "builds eight images, two architectures under qemu")
	h := newHarness(t)
	engine := dockertest.Engine(t)
	reg := registrytest.Shared(t)
	gitDir, commit := baseimagestest.SmallOpamRepository(t)
	plan := testPlan(t, "arches: [amd64, arm64]")
	pub := publisher(t, reg, credentials(t, reg), "e2e/ocaml/opam")
	pub.Exporter = h.exp
	key := filepath.Join(t.TempDir(), "cosign.key")
	if err := registry.GenerateKey(key, key+".pub"); err != nil {
		t.Fatal(err)
	}
	var err error
	if pub.Signer, err = registry.LoadSigner(key); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	start := time.Now()
	built := h.make(plan, nil, gitDir, commit)
	t.Logf("built %d images in %s", len(built), time.Since(start).Round(time.Second))
	ix := &Index{}
	rep, err := pub.Publish(ctx, io.MultiWriter(&h.log, buildLog), plan, built, ix)
	if err != nil {
		t.Fatal(err)
	}
	ix.Update(plan, built, rep)
	for _, b := range plan.Builds {
		t.Logf("%-28s %s %4d MB compressed, %d Debian packages", b.Name(), built[b.Name()].Digest, built[b.Name()].Size>>20, len(built[b.Name()].Packages))
	}

	t.Run("tags and indexes", func(t *testing.T) {
		tags, err := pub.Client.Tags(ctx, pub.Repository)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range plan.Tags {
			if !slices.Contains(tags, tg.Name) {
				t.Errorf("tag %s missing (tags: %v)", tg.Name, tags)
				continue
			}
			idx, err := pub.Client.Index(ctx, pub.Repository+":"+tg.Name)
			if err != nil {
				t.Fatal(err)
			}
			var arches []string
			for _, m := range idx.Manifests {
				arches = append(arches, m.Platform.Architecture)
			}
			slices.Sort(arches)
			if strings.Join(arches, ",") != "amd64,arm64" {
				t.Errorf("%s: index of %v", tg.Name, arches)
			}
		}
	})

	t.Run("docker pull and run", func(t *testing.T) {
		config := reg.DockerConfig(t)
		for _, c := range []struct {
			tag, platform, cmd, want string
		}{
			{"debian-12-ocaml-4.13", "linux/amd64", "ocaml -version; id -un; uname -m", "The OCaml toplevel, version 4.13.1 opam x86_64"},
			{"latest", "linux/arm64", "ocaml -version; id -un; uname -m", "The OCaml toplevel, version 5.3.0 opam aarch64"},
			{"debian-12-opam", "linux/amd64", "opam show -f name cppo; id -u", "cppo 1000"},
		} {
			t.Run(c.tag+" "+c.platform, func(t *testing.T) {
				ref := pub.Repository + ":" + c.tag
				t.Cleanup(func() { exec.Command("docker", "-H", engine.Host, "rmi", "-f", ref).Run() })
				dockerCLI(t, engine.Host, config, "pull", "--platform", c.platform, ref)
				out := dockerCLI(t, engine.Host, config, "run", "--rm", "--network", "none", "--platform", c.platform, ref, "sh", "-c", c.cmd)
				if got := strings.Join(strings.Fields(out), " "); got != c.want {
					t.Errorf("%s printed %q, want %q", c.cmd, got, c.want)
				}
			})
		}
	})

	t.Run("SBOM and signature", func(t *testing.T) {
		b := built["debian-12-ocaml-4.13-amd64"]
		d, _ := v1.NewHash(b.Digest)
		refs, err := pub.Client.Referrers(ctx, pub.Repository, d, registry.SPDXArtifactType)
		if err != nil || len(refs) != 1 {
			t.Fatalf("SBOM referrers %v, %v", refs, err)
		}
		data, err := pub.Client.Artifact(ctx, pub.Repository, refs[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		pkgs, err := registry.ParseSPDX(data)
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]string{}
		for _, p := range pkgs {
			found[p.Name] = p.Version
		}
		for name, want := range map[string]string{"ocaml-nox": "4.13.1", "opam": "2.1.2", "ocaml": "4.13.1", "opam-repository": commit} {
			if !strings.HasPrefix(found[name], want) {
				t.Errorf("SBOM: %s %q, want %s…", name, found[name], want)
			}
		}
		pubKey, err := registry.LoadPublicKey(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Client.Verify(ctx, pub.Repository+":debian-12-ocaml-4.13", pubKey); err != nil {
			t.Errorf("verify: %v", err)
		}
	})

	t.Run("an unchanged rebuild publishes nothing", func(t *testing.T) {
		// Export one image again, without the export memo: the same digest.
		again := &Exporter{Dir: t.TempDir(), Runner: h.exp.Runner}
		b := plan.Builds[0]
		first := built[b.Name()]
		re, err := again.Export(ctx, b, first.Snapshot, first.Inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if re.Digest != first.Digest {
			t.Errorf("%s exported again as %s, first as %s", b.Name(), re.Digest, first.Digest)
		}
		start := time.Now()
		rebuilt := h.make(plan, nil, gitDir, commit)
		rep2, err := pub.Publish(ctx, io.MultiWriter(&h.log, buildLog), plan, rebuilt, ix)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("unchanged rebuild and publication in %s", time.Since(start).Round(time.Millisecond))
		if len(rep2.Pushed) != 0 || len(rep2.Tags) != 0 {
			t.Errorf("unchanged: pushed %v, moved tags %v", rep2.Pushed, rep2.Tags)
		}
		for tag, d := range rep.Digests {
			if rep2.Digests[tag] != d {
				t.Errorf("%s: %s, was %s", tag, rep2.Digests[tag], d)
			}
		}
	})

	t.Run("a new Debian 13 release republishes only Debian 13", func(t *testing.T) {
		const release = "20260701"
		for _, b := range plan.Builds {
			if b.Image.Distro.Name == "debian-13" && b.Image.OCaml == "" {
				newRelease(t, b.Rootfs(""), release)
			}
		}
		rebuilt := h.make(plan, map[string]string{"debian-13": release}, gitDir, commit)
		rep3, err := pub.Publish(ctx, io.MultiWriter(&h.log, buildLog), plan, rebuilt, ix)
		if err != nil {
			t.Fatal(err)
		}
		ix.Update(plan, rebuilt, rep3)
		slices.Sort(rep3.Pushed)
		slices.Sort(rep3.Unchanged)
		want := []string{"debian-13-ocaml-5.3-amd64", "debian-13-ocaml-5.3-arm64", "debian-13-opam-amd64", "debian-13-opam-arm64"}
		if !slices.Equal(rep3.Pushed, want) {
			t.Errorf("pushed %v, want %v", rep3.Pushed, want)
		}
		if got := sortedKeys(rep3.Tags); strings.Join(got, " ") != "debian debian-13 debian-13-ocaml-5.3 debian-13-opam debian-ocaml-5.3 latest" {
			t.Errorf("moved tags %v", got)
		}
		if strings.Join(rep3.Unchanged, " ") != "debian-12 debian-12-ocaml-4.13 debian-12-opam" {
			t.Errorf("unchanged tags %v", rep3.Unchanged)
		}
		if why := rep3.Tags["debian-13-opam"]; len(why) == 0 || !strings.Contains(why[0], "Debian root filesystem") {
			t.Errorf("why debian-13-opam moved: %v", why)
		}
		t.Logf("republished %d of %d images, %d of %d tags", len(rep3.Pushed), len(plan.Builds), len(rep3.Tags), len(plan.Tags))
	})
}

// dockerCLI runs docker against the engine at host with the client configuration
// folder config (the registry's credentials).
func dockerCLI(t *testing.T, host, config string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+config)
	if host != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+host)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", args[0], err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestRebuildFromScratchSameDigest builds the Debian 12 opam image twice from the same
// inputs, once with the cached builder and once with an empty one (every step run
// again): the two images have the same digest. It takes minutes every time, so it
// runs only with KILN_BASEIMAGES_FROM_SCRATCH=1.
func TestRebuildFromScratchSameDigest(t *testing.T) {
	if os.Getenv("KILN_BASEIMAGES_FROM_SCRATCH") != "1" {
		t.Skip("builds an image from scratch (minutes); set KILN_BASEIMAGES_FROM_SCRATCH=1")
	}
	h := newHarness(t)
	gitDir, commit := baseimagestest.SmallOpamRepository(t)
	plan := testPlan(t, "arches: [amd64]\ndistros: [{name: debian-12}]\nocaml: []\nretired-ocaml: ['4.13']")
	if len(plan.Builds) != 1 {
		t.Fatalf("plan of %d builds", len(plan.Builds))
	}
	cached := h.make(plan, nil, gitDir, commit)
	fresh, err := builder.New(builder.Options{Root: t.TempDir(), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	exp := &Exporter{Dir: t.TempDir(), Runner: LocalRunner{Builder: fresh}}
	again, err := exp.BuildAll(context.Background(), io.MultiWriter(&h.log, buildLog), imagetest.Store(t), plan, nil, gitDir, commit, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	name := plan.Builds[0].Name()
	if cached[name].Digest != again[name].Digest {
		a, err := h.exp.Image(cached[name].Digest)
		if err != nil {
			t.Fatal(err)
		}
		b, err := exp.Image(again[name].Digest)
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("%s: %s from the cached builder, %s built again; entries that differ: %v", name, cached[name].Digest, again[name].Digest, differingEntries(t, a, b))
	}
}

// differingEntries are the files whose header or content differ between two images'
// layers, at most 30.
func differingEntries(t *testing.T, a, b v1.Image) []string {
	t.Helper()
	sums := func(img v1.Image) map[string]string {
		out := map[string]string{}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range ls {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				hdr, err := tr.Next()
				if err != nil {
					break
				}
				h := sha256.New()
				io.Copy(h, tr)
				out[fmt.Sprintf("%d:%s", i, hdr.Name)] = fmt.Sprintf("%o %d %d %s %x", hdr.Mode, hdr.Uid, hdr.Gid, hdr.Linkname, h.Sum(nil))
			}
			rc.Close()
		}
		return out
	}
	sa, sb := sums(a), sums(b)
	var out []string
	for k, v := range sa {
		if sb[k] != v {
			out = append(out, k)
		}
	}
	for k := range sb {
		if _, ok := sa[k]; !ok {
			out = append(out, k+" (new)")
		}
	}
	slices.Sort(out)
	return out[:min(len(out), 30)]
}
