package demo

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current/gitlocal"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestSampleRepository(t *testing.T) {
	testenv.RequireCommand(t, "git")
	dir := t.TempDir()
	ctx := context.Background()
	if err := CreateSample(ctx, dir); err != nil {
		t.Fatal(err)
	}
	heads, err := gitlocal.Read(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].Name != "feature" || heads[1].Name != "main" || len(heads[0].Commit) != 40 || heads[0].Commit == heads[1].Commit {
		t.Fatalf("heads %+v", heads)
	}
	if err := CreateSample(ctx, dir); err != nil {
		t.Fatalf("second CreateSample: %v", err)
	}
	if err := CommitSample(ctx, dir); err != nil {
		t.Fatal(err)
	}
	after, _ := gitlocal.Read(ctx, dir)
	if after[1].Commit == heads[1].Commit || after[0].Commit != heads[0].Commit {
		t.Fatalf("CommitSample moved %+v to %+v", heads, after)
	}
}

func TestSandboxSpec(t *testing.T) {
	r := SandboxRunner{Image: "kiln/debian"}
	sp, err := r.Spec(Step{Name: "check", Script: `echo "a \ b"; printf 'x\n'` + "\n" + "exit 0"})
	if err != nil {
		t.Fatal(err)
	}
	text := sp.String()
	for _, want := range []string{"(from kiln/debian)", "(workdir /src)", `echo \"a \\ b\"`} {
		if !strings.Contains(text, want) {
			t.Errorf("spec lacks %q:\n%s", want, text)
		}
	}
}

func gitRun(ctx context.Context, dir string, args ...string) error {
	c := exec.CommandContext(ctx, "git", append([]string{"-C", dir, "-c", "user.name=kiln demo", "-c", "user.email=demo@kiln.invalid", "-c", "commit.gpgsign=false"}, args...)...)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s in %s: %v: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}
