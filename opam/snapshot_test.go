package opam

import (
	"archive/tar"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// repoFile is one file of the opam-repository snapshot.
type repoFile struct {
	Path string
	Data []byte
}

var (
	snapshotOnce  sync.Once
	snapshotFiles []repoFile
	snapshotErr   error
)

// snapshot returns every file under packages/ of the shared opam-repository snapshot
// at master, read with git archive from the bare repository unpacked in the test cache.
func snapshot(t testing.TB) []repoFile {
	t.Helper()
	gitDir := repotest.GitDir(t)
	snapshotOnce.Do(func() {
		cmd := exec.Command("git", "--git-dir", gitDir, "archive", repotest.Master, "packages")
		r, err := cmd.StdoutPipe()
		if err != nil {
			snapshotErr = err
			return
		}
		if err := cmd.Start(); err != nil {
			snapshotErr = err
			return
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				snapshotErr = err
				return
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				snapshotErr = err
				return
			}
			snapshotFiles = append(snapshotFiles, repoFile{h.Name, data})
		}
		snapshotErr = cmd.Wait()
	})
	if snapshotErr != nil {
		t.Fatalf("read the opam-repository snapshot: %v", snapshotErr)
	}
	return snapshotFiles
}

// snapshotOpamFiles returns the packages/<name>/<name.version>/opam files.
func snapshotOpamFiles(t testing.TB) []repoFile {
	var out []repoFile
	for _, f := range snapshot(t) {
		parts := strings.Split(f.Path, "/")
		if len(parts) == 4 && parts[0] == "packages" && parts[3] == "opam" {
			out = append(out, f)
		}
	}
	return out
}

func TestSnapshotParsesAndRoundTrips(t *testing.T) {
	files := snapshotOpamFiles(t)
	if len(files) != 18287 {
		t.Errorf("snapshot has %d opam files, the data README says 18287", len(files))
	}
	var failed, differ int
	for _, rf := range files {
		f, err := Parse(rf.Path, rf.Data)
		if err != nil {
			failed++
			if failed < 10 {
				t.Errorf("parse: %v", err)
			}
			continue
		}
		printed := f.String()
		g, err := ParseString(rf.Path+" (printed)", printed)
		if err != nil {
			differ++
			if differ < 10 {
				t.Errorf("reparse printed %s: %v\n%s", rf.Path, err, printed)
			}
			continue
		}
		if !EqualFiles(f, g) {
			differ++
			if differ < 10 {
				t.Errorf("%s: printing and parsing again changed the value:\n%s", rf.Path, printed)
			}
		} else if again := g.String(); again != printed {
			differ++
			if differ < 10 {
				t.Errorf("%s: printing is not stable:\n%s\nthen\n%s", rf.Path, printed, again)
			}
		}
	}
	t.Logf("%d opam files: %d failed to parse, %d did not round-trip", len(files), failed, differ)
}

func TestSnapshotTypedFields(t *testing.T) {
	files := snapshotOpamFiles(t)
	errs := map[string]int{}
	for _, rf := range files {
		f, err := Parse(rf.Path, rf.Data)
		if err != nil {
			t.Fatal(err)
		}
		check := func(field string, err error) {
			if err != nil {
				errs[field]++
				if errs[field] <= 3 {
					t.Errorf("%v", err)
				}
			}
		}
		_, err = f.Depends()
		check("depends", err)
		_, err = f.Depopts()
		check("depopts", err)
		_, err = f.Conflicts()
		check("conflicts", err)
		_, err = f.Available()
		check("available", err)
		for _, c := range []string{"build", "install", "run-test", "remove"} {
			_, err = f.Commands(c)
			check(c, err)
		}
		_, err = f.URL()
		check("url", err)
		_, err = f.ExtraSources()
		check("extra-source", err)
		_, err = f.Depexts()
		check("depexts", err)
		_, err = f.PinDepends()
		check("pin-depends", err)
		_, err = f.ExtraFiles()
		check("extra-files", err)
	}
}

func BenchmarkParseSnapshot(b *testing.B) {
	files := snapshotOpamFiles(b)
	var size int64
	for _, f := range files {
		size += int64(len(f.Data))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, rf := range files {
			if _, err := Parse(rf.Path, rf.Data); err != nil {
				b.Fatal(err)
			}
		}
	}
	// CPU time used, a steadier figure than wall time on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkParseSnapshotParallel parses the snapshot on every core, as a repository
// index would.
func BenchmarkParseSnapshotParallel(b *testing.B) {
	files := snapshotOpamFiles(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		n := runtime.GOMAXPROCS(0)
		for w := 0; w < n; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for j := w; j < len(files); j += n {
					if _, err := Parse(files[j].Path, files[j].Data); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
	}
}

func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestSnapshotVersionOrder sorts every version string of the repository and checks
// that the order is consistent (antisymmetric and transitive on the sorted list).
func TestSnapshotVersionOrder(t *testing.T) {
	seen := map[string]bool{}
	var vs []string
	for _, f := range snapshotOpamFiles(t) {
		p, ok := ParsePackage(strings.Split(f.Path, "/")[2])
		if !ok {
			t.Errorf("%s: directory is not name.version", f.Path)
			continue
		}
		if !seen[string(p.Version)] {
			seen[string(p.Version)] = true
			vs = append(vs, string(p.Version))
		}
	}
	slices.SortFunc(vs, CompareVersions)
	for i := 0; i+1 < len(vs); i++ {
		a, b := vs[i], vs[i+1]
		if CompareVersions(a, b) > 0 || CompareVersions(b, a) < 0 {
			t.Fatalf("inconsistent order between %q and %q", a, b)
		}
		if i+2 < len(vs) && CompareVersions(a, vs[i+2]) > 0 {
			t.Fatalf("not transitive: %q, %q, %q", a, b, vs[i+2])
		}
	}
	t.Logf("%d distinct versions, from %q to %q", len(vs), vs[0], vs[len(vs)-1])
}
