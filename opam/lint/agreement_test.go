package lint

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam"
)

// opam21Differences lists the package directories where kiln's opam 2.1 emulation is
// known to report other numbers than `opam lint` 2.1, with the reason. Empty: none
// known on the sample.
var opam21Differences = map[string]string{}

// TestAgreementWithOpamLint runs `opam lint -s` (opam 2.1) on a sample of the snapshot
// and checks that kiln reports the same check numbers for each file.
func TestAgreementWithOpamLint(t *testing.T) {
	testenv.Short(t, "runs opam lint on a sample of the repository")
	opamBin := testenv.RequireCommand(t, "opam")
	out, err := exec.Command(opamBin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "2.1.") {
		t.Skipf("the emulation targets opam 2.1, found %q (%v)", strings.TrimSpace(string(out)), err)
	}
	dirs := snapshotPackages(t)
	keys := make([]string, 0, len(dirs))
	for k := range dirs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	root := t.TempDir()
	agree, total := 0, 0
	for i := 7; i < len(keys); i += 250 {
		in := dirs[keys[i]]
		// opam lint reads the directory from disk: write it out with its files.
		for rel, f := range in.Files {
			p := filepath.Join(root, in.Dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(opamBin, "lint", "-s", filepath.Join(root, in.Dir, "opam"))
		cmd.Env = append(os.Environ(), "OPAMROOT="+filepath.Join(root, ".opamroot"), "OPAMYES=1", "OPAMCOLOR=never")
		res, _ := cmd.Output() // exit status 1 when there are errors
		want := strings.Join(strings.Fields(string(res)), " ")
		var nums []int
		seen := map[int]bool{}
		for _, f := range Lint(in, Context{Checks: OpamLint, Opam: "2.1"}) {
			if n := f.OpamNumber(); n > 0 && !seen[n] {
				seen[n] = true
				nums = append(nums, n)
			}
		}
		sort.Ints(nums)
		got := make([]string, len(nums))
		for j, n := range nums {
			got[j] = strconv.Itoa(n)
		}
		total++
		if g := strings.Join(got, " "); g == want {
			agree++
		} else if why, ok := opam21Differences[in.Dir]; ok {
			t.Logf("%s: opam %q, kiln %q (known: %s)", in.Dir, want, g, why)
		} else {
			t.Errorf("%s: opam lint says %q, kiln says %q", in.Dir, want, g)
		}
	}
	t.Logf("opam lint 2.1 and kiln agree on %d of %d package directories", agree, total)
}

// opam21Cases reads testdata/opam21: small opam files probing the corners of opam
// lint 2.1, with the check numbers opam 2.1.2 reported for each.
func opam21Cases(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("testdata/opam21/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, nums, _ := strings.Cut(line, ":")
		cases[name] = strings.TrimSpace(nums)
	}
	return cases
}

func opam21Input(t *testing.T, name string) Input {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "opam21", name+".opam"))
	if err != nil {
		t.Fatal(err)
	}
	dir := "packages/" + name + "/" + name + ".1.0"
	return Input{Package: opam.Package{Name: opam.PackageName(name), Version: "1.0"}, Dir: dir, Files: map[string]File{"opam": {Data: data}}}
}

func opamNumbers(fs []Finding) string {
	var nums []int
	seen := map[int]bool{}
	for _, f := range fs {
		if n := f.OpamNumber(); n > 0 && !seen[n] {
			seen[n] = true
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	s := make([]string, len(nums))
	for i, n := range nums {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}

// TestOpam21Corners checks kiln's opam 2.1 emulation against what opam 2.1.2 said
// about each file of testdata/opam21.
func TestOpam21Corners(t *testing.T) {
	for name, want := range opam21Cases(t) {
		got := opamNumbers(Lint(opam21Input(t, name), Context{Checks: OpamLint, Opam: "2.1"}))
		if got != want {
			t.Errorf("%s: opam 2.1 said %q, kiln says %q", name, want, got)
		}
	}
}

// TestOpam21CornersStillHold re-runs opam lint on testdata/opam21 to check the
// recorded answers.
func TestOpam21CornersStillHold(t *testing.T) {
	testenv.Short(t, "runs opam lint on each corner case")
	opamBin := testenv.RequireCommand(t, "opam")
	if out, err := exec.Command(opamBin, "--version").Output(); err != nil || !strings.HasPrefix(string(out), "2.1.") {
		t.Skipf("the recorded answers are opam 2.1's, found %q", strings.TrimSpace(string(out)))
	}
	root := t.TempDir()
	for name, want := range opam21Cases(t) {
		in := opam21Input(t, name)
		p := filepath.Join(root, in.Dir, "opam")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, in.Files["opam"].Data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(opamBin, "lint", "-s", p)
		cmd.Env = append(os.Environ(), "OPAMROOT="+filepath.Join(root, ".opamroot"), "OPAMCOLOR=never")
		out, _ := cmd.Output()
		if got := strings.Join(strings.Fields(string(out)), " "); got != want {
			t.Errorf("%s: opam lint now says %q, recorded %q", name, got, want)
		}
	}
}
