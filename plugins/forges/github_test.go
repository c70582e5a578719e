package forges

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/github/githubtest"
)

// One installation or repository that cannot be read stops neither the others nor its
// own builds: a suspended installation is skipped, a broken one keeps its refs of the
// last read.
func TestGitHubReadsPastFailingInstallations(t *testing.T) {
	api := githubtest.New(t, 4242)
	now := time.Now()
	for i, acct := range []string{"healthy", "suspended", "flaky"} {
		id := int64(i + 1)
		api.AddInstallation(id, acct)
		commit := slices.Repeat([]byte{byte('a' + i)}, 40)
		api.SetRepo(githubtest.Repo{Owner: acct, Name: "lib", Installation: id,
			Branches: map[string]string{"main": string(commit)}, CommitDates: map[string]time.Time{string(commit): now}})
	}
	g := &GitHub{App: mustApp(t, api)}
	g.Refs() // as a pipeline does first: the monitor and its maps are set up
	owners := func(refs []forge.Ref) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.Repo.Owner)
		}
		slices.Sort(out)
		return out
	}
	ctx := context.Background()
	refs, err := g.ListRefs(ctx)
	if err != nil || !slices.Equal(owners(refs), []string{"flaky", "healthy", "suspended"}) {
		t.Fatalf("first read: %v %v", owners(refs), err)
	}
	api.SuspendInstallation(2)
	api.BreakInstallation(3)
	// A new client per installation, so that no token is cached from the first read.
	g = &GitHub{App: mustApp(t, api), lastRefs: g.lastRefs}
	refs, err = g.ListRefs(ctx)
	if err != nil {
		t.Fatalf("one broken installation failed the read: %v", err)
	}
	if got := owners(refs); !slices.Equal(got, []string{"flaky", "healthy"}) {
		t.Errorf("refs of %v, want the healthy installation's and the broken one's as last read (not the suspended one's)", got)
	}
	// Nothing readable and nothing to keep: the read fails, saying why.
	api.BreakInstallation(1)
	g = &GitHub{App: mustApp(t, api)}
	api.SuspendInstallation(3)
	if refs, err := g.ListRefs(ctx); err == nil {
		t.Errorf("every installation broken, yet the read gave %v", owners(refs))
	}
}

func mustApp(t *testing.T, api *githubtest.API) *github.App {
	t.Helper()
	app, err := github.NewApp(github.AppConfig{AppID: 4242, PrivateKey: api.PrivateKeyPEM(), API: api.APIURL()})
	if err != nil {
		t.Fatal(err)
	}
	return app
}
