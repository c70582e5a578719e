package ocamlci

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// TestVariantsWaitOnlyForWhatTheyNeed makes the arm64 base image never finish and
// runs no worker: lint-opam still passes, amd64 does not wait for the arm64 image (it
// reaches the fleet's queue), and every waiting variant says what it waits for.
func TestVariantsWaitOnlyForWhatTheyNeed(t *testing.T) {
	testenv.Short(t, "runs the service on a fleet")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	commit := commitTree(t, repoDir, "main", sampleProject("Hello", false), "hello")
	h := startCIWith(t, repoDir, matrix.Default(), harnessOptions{noImages: true, configure: func(s *Service) {
		s.Images = t.TempDir() // an empty store: every base image is made
		s.heartbeatEvery = 200 * time.Millisecond
		s.ensureDebian = func(st *image.Store, ctx context.Context, o image.DebianOptions) (image.Base, error) {
			if o.Arch == "arm64" {
				<-ctx.Done() // the emulated image takes for ever
				return image.Base{}, ctx.Err()
			}
			return image.Base{ID: "sha256:test"}, nil
		}
	}})
	ctx := context.Background()
	amd, arm := "debian-12-4.13_amd64", "debian-12-4.13_arm64"
	want := map[string]func(v *results.VariantRecord) bool{
		"(lint-opam)": func(v *results.VariantRecord) bool { return v.State == forge.Passed },
		amd: func(v *results.VariantRecord) bool {
			return v.State == forge.Queued && strings.Contains(v.Message, "queued in fleet pool linux-x86_64") &&
				strings.Contains(v.Message, "no worker has joined pool linux-x86_64")
		},
		arm: func(v *results.VariantRecord) bool {
			return v.State == forge.Queued && strings.Contains(v.Message, "waiting for the base image "+matrix.Default()[1].Image)
		},
	}
	deadline := time.Now().Add(3 * time.Minute)
	for name, ok := range want {
		for {
			v, err := h.svc.Index.Variant(ctx, h.repo, commit, name)
			if err != nil {
				t.Fatal(err)
			}
			if v != nil && ok(v) {
				t.Logf("%s: %s: %s", name, v.State, v.Message)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("variant %s: %+v", name, v)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The variant page of a queued variant says it is queued and why.
	ui, err := results.NewUI(h.svc.Index, h.engine, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ui)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/git/local/hello/commit/" + commit + "/variant/" + amd)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "The job is queued") || !strings.Contains(string(page), "no worker has joined pool linux-x86_64") || strings.Contains(string(page), "still running") {
		t.Errorf("variant page of a queued variant:\n%s", page)
	}

	// The arm64 image's job says that it goes on.
	for {
		var log string
		for _, j := range h.engine.Jobs() {
			if j.Op == "ocamlci-base-image" && strings.Contains(j.Label, "arm64") {
				log = readJobLog(t, h.engine, j.ID)
			}
		}
		if strings.Contains(log, "still making kiln/debian:bookworm-arm64") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the arm64 image's log shows no progress:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
