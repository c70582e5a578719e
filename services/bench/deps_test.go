package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
	"github.com/kiln-ci/kiln/services/internal/opamsourcestest"
)

// stepCached says whether the builder took the step whose line holds marker from its
// cache, as the log of a build shows it (the step's line, its log, then "---> using"
// or "---> saved"); found is false when no step holds it.
func stepCached(log, marker string) (cached, found bool) {
	lines := strings.Split(log, "\n")
	for i, l := range lines {
		if !strings.Contains(l, marker) || !strings.Contains(l, "(run (shell ") {
			continue
		}
		for _, next := range lines[i+1:] {
			if strings.HasPrefix(next, "---> ") {
				return strings.HasPrefix(next, "---> using "), true
			}
		}
		return false, true
	}
	return false, false
}

// TestSandboxDependencyLayer: a project whose benchmark needs ocamlfind (not in the
// image) gets it from the opam layer its opam file asks for; a second run, with the
// sources changed but not the opam file, takes the layer's steps from the builder's
// cache. The benchmark runs in a tmpfs.
func TestSandboxDependencyLayer(t *testing.T) {
	testenv.Short(t, "installs opam packages in the sandbox")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "tar", "mmdebstrap")
	src := opamsourcestest.Serve(t)
	plat := matrix.Debian("amd64")
	base := imagetest.DebianWith(t, *plat.Debian)
	plat.Image = base.Ref
	repo := gittest.NewRepo(t)
	repo.Commit("packages", src.Repository(t, opamsourcestest.SystemSet))
	state := t.TempDir()
	b, err := builder.New(builder.Options{Root: filepath.Join(state, "builder"), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	archives, err := opamenv.NewArchives(filepath.Join(state, "archives"), opamenv.ArchivesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deps := &Deps{Opam: &opamrepo.Repository{GitDir: filepath.Join(repo.Dir, ".git"), Branch: "main", Poll: time.Hour},
		Archives: archives, Platform: plat}
	project := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(project, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("demo.opam", opamsourcestest.Opam("demo", `depends: ["ocaml" "ocamlfind"]`+"\n"))
	// The benchmark runs in a tmpfs work dir.
	const command = `test "$(stat -f -c %T .)" = tmpfs && ocamlfind query findlib >/dev/null && cat result.json`
	steps := []string{"opam switch create", "opam install"}
	for _, tc := range []struct {
		name       string
		deps       *Deps
		value      string // written to result.json before the run
		wantCached bool
		wantErr    bool
	}{
		{name: "without the layer ocamlfind is missing", value: "1", wantErr: true},
		{name: "first run builds the layer", deps: deps, value: "2"},
		{name: "second run with other sources reuses it", deps: deps, value: "3", wantCached: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write("result.json", `{"name": "demo", "results": [{"name": "t", "metrics": [{"name": "v", "value": `+tc.value+`}]}]}`+"\n")
			var log bytes.Buffer
			start := time.Now()
			o := Sandbox{Builder: b, Image: base.Ref, Deps: tc.deps}.Run(context.Background(), Job{Dir: project, Command: command, Repeats: 1, Timeout: 10 * time.Minute}, &log)
			t.Logf("%s: %.1f s", tc.name, time.Since(start).Seconds())
			if (o.Err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v\n%s", o.Err, tc.wantErr, log.String())
			}
			if tc.wantErr {
				return
			}
			if m, ok := o.Head.Find("demo", "t", "v"); !ok || fmt.Sprint(m.Value.Samples) != "["+tc.value+"]" {
				t.Errorf("metric v = %+v, want the one sample %s\n%s", m, tc.value, log.String())
			}
			for _, s := range steps {
				cached, found := stepCached(log.String(), s)
				if !found || cached != tc.wantCached {
					t.Errorf("step %q: found %v, from the cache %v, want %v\n%s", s, found, cached, tc.wantCached, log.String())
				}
			}
		})
	}
}
