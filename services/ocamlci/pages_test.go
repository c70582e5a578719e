package ocamlci

import (
	"bytes"
	"context"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/results"
	"github.com/kiln-ci/kiln/web"
)

// browser is a headless chromium on the console and the results pages of a harness.
type browser struct {
	t   *testing.T
	ctx context.Context
	url string
}

// newBrowser serves the console (with a menu link to the repositories) and the results
// pages of h, and opens chromium on them in a 1400×1000 window.
func newBrowser(t *testing.T, h *ciHarness) *browser {
	ui, err := results.NewUI(h.svc.Index, h.engine, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := browsertest.Serve(t, h.engine, ui.Routes(), ui, web.Link{Text: "Git repositories", URL: "/git"})
	ctx := browsertest.Chromium(t, 3*time.Minute, chromedp.EmulateViewport(1400, 1000))
	return &browser{t: t, ctx: ctx, url: srv.URL}
}

// open loads path and waits for sel to be visible.
func (b *browser) open(path, sel string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(b.url+path), chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("open %s (%s): %v", path, sel, err)
	}
}

// text is the text of the elements sel matches, joined by "|".
func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll(`+jsString(sel)+`)).map(e => e.textContent).join("|")`))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// colourAt is the colour of the screenshot's pixel inside the first element sel
// matches, in its left padding (a badge's text is white), as "#rrggbb".
func (b *browser) colourAt(sel string) string {
	b.t.Helper()
	xy, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]float64](`(r => [r.left + 3, r.top + r.height/2])(document.querySelector(`+jsString(sel)+`).getBoundingClientRect())`))
	if err != nil || len(xy) != 2 {
		b.t.Fatalf("where is %s: %v %v", sel, xy, err)
	}
	shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		b.t.Fatal(err)
	}
	r, g, bl, _ := img.At(int(xy[0]), int(xy[1])).RGBA()
	return hexColour(r>>8, g>>8, bl>>8)
}

func hexColour(r, g, b uint32) string {
	const digits = "0123456789abcdef"
	out := []byte{'#'}
	for _, c := range []uint32{r, g, b} {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func jsString(s string) string { return "`" + strings.ReplaceAll(s, "`", "\\`") + "`" }

// The state colours of the results pages' stylesheet.
var stateColours = map[forge.State]string{forge.Passed: "#2e8b2e", forge.Failed: "#d73a2f", forge.Queued: "#8a8a8a"}

func TestPagesShowCommitsAndStates(t *testing.T) {
	testenv.Short(t, "builds a dune project in a sandbox and browses its pages with chromium")
	testenv.RequireCommand(t, "chromium")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	good := commitTree(t, repoDir, "main", sampleProject("Hello", false), "Greet the world\n\nThe body of the message.")
	bad := commitTree(t, repoDir, "broken", sampleProject("Hi", false), "Say hi instead")
	gitRun(t, repoDir, "checkout", "-q", "-B", "no-opam", "main")
	gitRun(t, repoDir, "rm", "-q", "hello.opam")
	gitRun(t, repoDir, "commit", "-q", "-m", "Drop the opam file")
	noOpam := gitRun(t, repoDir, "rev-parse", "HEAD")

	h := startCI(t, repoDir, matrix.Default()[:1], nil)
	for _, c := range []string{good, bad, noOpam} {
		h.waitCommit(c, 10*time.Minute)
	}
	b := newBrowser(t, h)
	repo := "/git/local/hello"

	b.open(repo, "table.refs")
	rows := b.text("table.refs tbody tr")
	for _, want := range []string{"Greet the world", "Say hi instead", "Drop the opam file", "dev", "ago", "passed", "failed"} {
		if !strings.Contains(rows, want) {
			t.Errorf("repository page lacks %q: %s", want, rows)
		}
	}
	if d := b.text(`table.refs tr:has(a[href$="/history/branch/main"]) td.duration`); d == "" {
		t.Error("repository page: no duration for main")
	}
	for ref, st := range map[string]forge.State{"main": forge.Passed, "broken": forge.Failed} {
		if got := b.colourAt(`table.refs tr:has(a[href$="/history/branch/` + ref + `"]) .state`); got != stateColours[st] {
			t.Errorf("repository page: the %s badge of %s is %s on the screen, want %s", st, ref, got, stateColours[st])
		}
	}
	if b.text(`header a[href="/"]`) == "" {
		t.Error("results pages have no link to the console")
	}

	b.open(repo+"/commit/"+bad, "section.errors")
	for sel, want := range map[string]string{
		"pre.commit-message":     "Say hi instead",
		"p.meta":                 "By dev",
		"p.meta .duration":       "s",
		"section.errors":         `Error: expected "Hello, world" but got "Hi, world"`,
		`a[href^="/query?key="]`: "Failed jobs of this commit",
	} {
		if s := b.text(sel); !strings.Contains(s, want) {
			t.Errorf("failed commit's page: %s is %q, want %q in it", sel, s, want)
		}
	}
	b.open(repo+"/commit/"+good, "table.variants")
	if s := b.text("pre.commit-message"); !strings.Contains(s, "The body of the message.") {
		t.Errorf("commit page: message %q", s)
	}
	if s := b.text(`a[href^="/query?key="]`); s != "" {
		t.Errorf("a passed commit's page links to its failed jobs: %q", s)
	}
	b.open(repo+"/commit/"+noOpam, "section.errors")
	if s := b.text("section.errors"); !strings.Contains(s, "no opam files found") {
		t.Errorf("the failed analysis's page hides its reason: %q", s)
	}
	b.open(repo+"/history/branch/main", "table.history")
	if s := b.text("table.history tbody"); !strings.Contains(s, "Greet the world") || !strings.Contains(s, "dev") {
		t.Errorf("history page: %q", s)
	}

	b.open("/", "#graph svg")
	if s := b.text(`header a.service[href="/git"]`); s == "" {
		t.Error("the console has no link to the repositories")
	}
	overflow, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.querySelector("#graph svg").getBoundingClientRect().right > window.innerWidth`))
	if err != nil || overflow {
		t.Errorf("the pipeline graph is wider than the window (%v)", err)
	}
}

// TestPagesShowWhyVariantsWait runs no worker and never makes the arm64 image: the
// commit page says why each variant waits, with grey queued badges.
func TestPagesShowWhyVariantsWait(t *testing.T) {
	testenv.Short(t, "runs the service on a fleet and browses its pages with chromium")
	testenv.RequireCommand(t, "chromium")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	commit := commitTree(t, repoDir, "main", sampleProject("Hello", false), "hello")
	h := startCIWith(t, repoDir, matrix.Default(), harnessOptions{noImages: true, configure: func(s *Service) {
		s.Images = t.TempDir()
		s.ensureDebian = func(st *image.Store, ctx context.Context, o image.DebianOptions) (image.Base, error) {
			if o.Arch == "arm64" {
				<-ctx.Done()
				return image.Base{}, ctx.Err()
			}
			return image.Base{ID: "sha256:test"}, nil
		}
	}})
	amd, arm := "debian-12-4.13_amd64", "debian-12-4.13_arm64"
	deadline := time.Now().Add(3 * time.Minute)
	for {
		a, _ := h.svc.Index.Variant(context.Background(), h.repo, commit, amd)
		r, _ := h.svc.Index.Variant(context.Background(), h.repo, commit, arm)
		if a != nil && r != nil && strings.Contains(a.Message, "no worker") && strings.Contains(r.Message, "base image") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("variants never said why they wait: %+v %+v", a, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b := newBrowser(t, h)
	b.open("/git/local/hello/commit/"+commit, "table.variants")
	for name, want := range map[string]string{amd: "no worker has joined pool linux-x86_64", arm: "waiting for the base image"} {
		row := `table.variants tr:has(a.variant[href$="/variant/` + name + `"])`
		if s := b.text(row + " td.note"); !strings.Contains(s, want) {
			t.Errorf("%s: the commit page says %q, want %q", name, s, want)
		}
		if got := b.colourAt(row + " .state"); got != stateColours[forge.Queued] {
			t.Errorf("%s: the queued badge is %s on the screen, want %s", name, got, stateColours[forge.Queued])
		}
	}
}
