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
