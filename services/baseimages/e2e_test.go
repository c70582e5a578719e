package baseimages

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// harness builds images with a builder kept in the test cache, so that a warm run
// (and the arm64 images, slow under qemu) reuse its steps.
type harness struct {
	t      *testing.T
	gitDir string
	exp    *Exporter
	work   string
	rootfs map[string]Rootfs
	log    testenv.Buffer
}

func newHarness(t *testing.T) *harness {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "mmdebstrap", "git")
	b, err := builder.New(builder.Options{Root: filepath.Join(testenv.CacheDir(t, "base-images"), "builder"), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	h := &harness{t: t, gitDir: repotest.GitDir(t), work: work,
		exp: &Exporter{Dir: filepath.Join(work, "export"), Runner: LocalRunner{Builder: b}}}
	t.Cleanup(func() {
		if t.Failed() {
			log := h.log.String()
			t.Logf("build log (end):\n%s", log[max(0, len(log)-8000):])
		}
	})
	return h
}

// make builds every build of p from the opam repository at commit.
func (h *harness) make(p Plan, commit string) map[string]Built {
	h.t.Helper()
	for _, b := range p.Builds {
		imagetest.DebianWith(h.t, b.Rootfs("")) // made once in the test cache, waiting for .ci/baseimages.go
	}
	out, err := h.exp.BuildAll(context.Background(), io.MultiWriter(&h.log, buildLog), imagetest.Store(h.t), p, h.gitDir, commit, h.work)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// buildLog receives build logs besides the harness (io.Discard; a file to watch).
var buildLog io.Writer = io.Discard

func TestMakeDebian12(t *testing.T) {
	cfg, err := ParseConfig([]byte("arches: [amd64]\ndistros: [{name: debian-12}]"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	got := h.make(cfg.Plan(), repotest.Master)
	for n, b := range got {
		t.Logf("%s %s %d MB %d packages", n, b.Digest, b.Size>>20, len(b.Packages))
	}
}
