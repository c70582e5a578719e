package forges

import (
	"context"
	"fmt"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/github"
)

// PublishCheck shows a commit's status under check on the forge of its ref, for
// services that show several statuses per commit. A forge that cannot name its
// statuses gets the status as Publish gives it; a forge without a publisher (plain
// git) is not told.
func (s *Set) PublishCheck(ctx context.Context, ref forge.Ref, check forge.Check, st forge.Status, variants []forge.Variant) error {
	s.mu.Lock()
	p := s.publishers[ref.Repo.Forge]
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	var err error
	if cp, ok := p.(forge.CheckPublisher); ok {
		err = cp.PublishCheck(ctx, ref, check, st, variants)
	} else {
		err = p.Publish(ctx, ref, st, variants)
	}
	if err != nil {
		return fmt.Errorf("publish status %q to %s: %w", check.Name, ref.Repo.Forge, err)
	}
	return nil
}

// Comment makes the comment of ref's pull request that holds marker say body, on
// forges that take comments. A branch (no pull request) or a forge without comments
// (plain git) gets none, and that is not an error.
func (s *Set) Comment(ctx context.Context, ref forge.Ref, marker, body string) error {
	if ref.PR <= 0 {
		return nil
	}
	s.mu.Lock()
	p := s.publishers[ref.Repo.Forge]
	s.mu.Unlock()
	c, ok := p.(forge.Commenter)
	if !ok {
		return nil
	}
	if err := c.Comment(ctx, ref, marker, body); err != nil {
		return fmt.Errorf("comment on %s#%d: %w", ref.Repo, ref.PR, err)
	}
	return nil
}

// PublishCheck sets the commit status named check.Name (default the Gitea's Context),
// its description naming the first failure.
func (g *Gitea) PublishCheck(ctx context.Context, ref forge.Ref, check forge.Check, st forge.Status, variants []forge.Variant) error {
	name := orDefault(check.Name, g.Context, "kiln")
	url := orDefault(check.URL, fmt.Sprintf("%s/gitea/%s/%s/commit/%s", g.BaseURL, ref.Repo.Owner, ref.Repo.Name, ref.Commit))
	return g.Client.SetStatus(ctx, gitea.Repo{Owner: ref.Repo.Owner, Name: ref.Repo.Name}, ref.Commit, gitea.Status{
		Context: name, State: st.State, Description: st.Short(variants, 255), TargetURL: url,
	})
}

// Comment makes the pull request's comment holding marker say body.
func (g *Gitea) Comment(ctx context.Context, ref forge.Ref, marker, body string) error {
	return g.Client.UpsertComment(ctx, gitea.Repo{Owner: ref.Repo.Owner, Name: ref.Repo.Name}, ref.PR, marker, body)
}

// PublishCheck sets the commit's check run named check.Name (default the GitHub's
// CheckName).
func (g *GitHub) PublishCheck(ctx context.Context, ref forge.Ref, check forge.Check, st forge.Status, _ []forge.Variant) error {
	c, err := g.client(ref)
	if err != nil {
		return err
	}
	_, err = c.SetCheckRun(ctx, github.Repo{Owner: ref.Repo.Owner, Name: ref.Repo.Name}, ref.Commit, github.CheckRun{
		Name: orDefault(check.Name, g.CheckName, "kiln"), Status: st, ExternalID: ref.Commit,
		DetailsURL: orDefault(check.URL, fmt.Sprintf("%s/github/%s/%s/commit/%s", g.BaseURL, ref.Repo.Owner, ref.Repo.Name, ref.Commit)),
	})
	return err
}

// Comment makes the pull request's comment holding marker say body.
func (g *GitHub) Comment(ctx context.Context, ref forge.Ref, marker, body string) error {
	c, err := g.client(ref)
	if err != nil {
		return err
	}
	return c.UpsertComment(ctx, github.Repo{Owner: ref.Repo.Owner, Name: ref.Repo.Name}, ref.PR, marker, body)
}

// client is the installation's client that can access ref's repository.
func (g *GitHub) client(ref forge.Ref) (*github.Client, error) {
	g.init()
	g.mu.Lock()
	c := g.clients[ref.Repo.Owner+"/"+ref.Repo.Name]
	g.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("no installation of the App can access %s/%s", ref.Repo.Owner, ref.Repo.Name)
	}
	return c, nil
}

// orDefault is the first of vs that is not empty.
func orDefault(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
