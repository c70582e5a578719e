package lint

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

var (
	snapOnce sync.Once
	snapDirs map[string]Input
	snapErr  error
)

// snapshotPackages reads every package directory of the shared opam-repository
// snapshot at master (with file modes from git).
func snapshotPackages(t testing.TB) map[string]Input {
	t.Helper()
	gitDir := repotest.GitDir(t)
	snapOnce.Do(func() {
		cmd := exec.Command("git", "--git-dir", gitDir, "archive", repotest.Master, "packages")
		r, err := cmd.StdoutPipe()
		if err != nil {
			snapErr = err
			return
		}
		if snapErr = cmd.Start(); snapErr != nil {
			return
		}
		snapDirs = map[string]Input{}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				snapErr = err
				return
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			parts := strings.SplitN(h.Name, "/", 4)
			if len(parts) < 4 {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				snapErr = err
				return
			}
			dir := path.Join(parts[0], parts[1], parts[2])
			in, ok := snapDirs[dir]
			if !ok {
				in = Input{Dir: dir, Files: map[string]File{}}
				in.Package, _ = opam.ParsePackage(parts[2])
			}
			in.Files[parts[3]] = File{Data: data, Mode: os.FileMode(h.Mode).Perm()}
			snapDirs[dir] = in
		}
		snapErr = cmd.Wait()
	})
	if snapErr != nil {
		t.Fatalf("read the opam-repository snapshot: %v", snapErr)
	}
	return snapDirs
}

// TestSnapshotLint lints every package of the real repository as opam-repository CI
// would on a change, and reports how often each rule fires.
func TestSnapshotLint(t *testing.T) {
	dirs := snapshotPackages(t)
	var names []opam.PackageName
	seen := map[opam.PackageName]bool{}
	for _, in := range dirs {
		if !seen[in.Package.Name] {
			seen[in.Package.Name] = true
			names = append(names, in.Package.Name)
		}
	}
	ctx := DefaultContext()
	ctx.Names = NewNames(names)
	counts := map[string]int{}
	examples := map[string]string{}
	pkgsWithErrors := 0
	for _, in := range dirs {
		fs := Lint(in, ctx)
		hasErr := false
		for _, f := range fs {
			counts[f.Rule]++
			if _, ok := examples[f.Rule]; !ok {
				examples[f.Rule] = f.String()
			}
			if f.Severity == Error {
				hasErr = true
			}
		}
		if hasErr {
			pkgsWithErrors++
		}
	}
	var rules []string
	for r := range counts {
		rules = append(rules, r)
	}
	sort.Strings(rules)
	for _, r := range rules {
		t.Logf("%-28s %6d  e.g. %s", r, counts[r], examples[r])
	}
	t.Logf("%d package directories, %d with at least one error", len(dirs), pkgsWithErrors)
	if len(dirs) != 18287 {
		t.Errorf("%d package directories, the data README says 18287", len(dirs))
	}
	// Every file of the repository parses, so opam lint's "does not parse" must never fire.
	if counts["opam-1"] != 0 {
		t.Errorf("opam-1 (does not parse) fired %d times: %s", counts["opam-1"], examples["opam-1"])
	}
}

// BenchmarkLintSnapshot lints every package directory of the snapshot.
func BenchmarkLintSnapshot(b *testing.B) {
	dirs := snapshotPackages(b)
	ctx := DefaultContext()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, in := range dirs {
			Lint(in, ctx)
		}
	}
}
