package baseimages

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/services/baseimages/baseimagestest"
)

// TestEmulatedArchesOpamImage builds the Debian 12 opam image for armhf and ppc64el,
// the two architectures of the catalogue that are opt-in: under qemu-user here,
// making their root filesystems and running opam init takes long, so it runs only
// with KILN_BASEIMAGES_EMULATED=1. Each image is checked to be of its architecture
// and to hold opam, initialised (its opam init step ran under emulation).
func TestEmulatedArchesOpamImage(t *testing.T) {
	if os.Getenv("KILN_BASEIMAGES_EMULATED") != "1" {
		t.Skip("builds images under qemu for armhf and ppc64el (long); set KILN_BASEIMAGES_EMULATED=1")
	}
	h := newHarness(t)
	h.exp = &Exporter{Dir: baseimagestest.ExportDir(t, "export-emulated"), Runner: h.exp.Runner}
	gitDir, commit := baseimagestest.SmallOpamRepository(t)
	cases := []struct {
		arch, ociArch, variant string
	}{
		{"armhf", "arm", "v7"},
		{"ppc64el", "ppc64le", ""},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			plan := testPlan(t, "arches: ["+c.arch+"]\ndistros: [{name: debian-12}]\nocaml: []\nretired-ocaml: ['4.13']")
			if len(plan.Builds) != 1 {
				t.Fatalf("plan of %d builds, want the opam image", len(plan.Builds))
			}
			b := plan.Builds[0]
			start := time.Now()
			imagetest.DebianWith(t, b.Rootfs(""))
			rootfs := time.Since(start)
			start = time.Now()
			built, err := h.exp.BuildAll(context.Background(), io.MultiWriter(&h.log, buildLog), imagetest.Store(t), plan, nil, gitDir, commit, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			out := built[b.Name()]
			t.Logf("%s: root filesystem %s, image built and exported in %s, %d MB compressed, %d Debian packages, %s",
				b.Name(), rootfs.Round(time.Second), time.Since(start).Round(time.Second), out.Size>>20, len(out.Packages), out.Digest)
			img, err := h.exp.Image(out.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != c.ociArch || cf.Variant != c.variant {
				t.Errorf("image of %s/%s, want %s/%s", cf.Architecture, cf.Variant, c.ociArch, c.variant)
			}
			if v := out.Packages["opam"]; !strings.HasPrefix(v, "2.1.2") {
				t.Errorf("opam package %q, want 2.1.2", v)
			}
		})
	}
}
