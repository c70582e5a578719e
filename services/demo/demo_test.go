package demo

import (
	"context"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestSampleRepository(t *testing.T) {
	testenv.RequireCommand(t, "git")
	dir := t.TempDir()
	ctx := context.Background()
	if err := CreateSample(ctx, dir); err != nil {
		t.Fatal(err)
	}
	heads, err := ReadHeads(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].Branch != "feature" || heads[1].Branch != "main" || len(heads[0].Commit) != 40 || heads[0].Commit == heads[1].Commit {
		t.Fatalf("heads %+v", heads)
	}
	if err := CreateSample(ctx, dir); err != nil {
		t.Fatalf("second CreateSample: %v", err)
	}
	if err := CommitSample(ctx, dir); err != nil {
		t.Fatal(err)
	}
	after, _ := ReadHeads(ctx, dir)
	if after[1].Commit == heads[1].Commit || after[0].Commit != heads[0].Commit {
		t.Fatalf("CommitSample moved %+v to %+v", heads, after)
	}
	if _, err := ReadHeads(ctx, t.TempDir()); err == nil || !strings.Contains(err.Error(), "read branches of") {
		t.Fatalf("ReadHeads of a folder that is not a repository: %v", err)
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
