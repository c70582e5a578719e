package github

import (
	"context"
	"fmt"
	"strings"

	gh "github.com/google/go-github/v89/github"

	"github.com/kiln-ci/kiln/forge"
)

// UpsertComment makes the comment of pull request n that holds marker say body (with
// the marker): it edits the first such comment, or creates one.
func (c *Client) UpsertComment(ctx context.Context, repo Repo, n int, marker, body string) error {
	body, err := forge.CommentTarget(repo.String(), n, marker, body)
	if err != nil {
		return err
	}
	for cm, err := range c.api.Issues.ListCommentsIter(ctx, repo.Owner, repo.Name, n, &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: 100}}) {
		if err != nil {
			return fmt.Errorf("comments of %s#%d: %w", repo, n, apiError(err))
		}
		if !strings.Contains(cm.GetBody(), marker) {
			continue
		}
		if cm.GetBody() == body {
			return nil
		}
		if _, _, err := c.api.Issues.EditComment(ctx, repo.Owner, repo.Name, cm.GetID(), &gh.IssueComment{Body: gh.Ptr(body)}); err != nil {
			return fmt.Errorf("edit comment %d of %s#%d: %w", cm.GetID(), repo, n, apiError(err))
		}
		return nil
	}
	if _, _, err := c.api.Issues.CreateComment(ctx, repo.Owner, repo.Name, n, &gh.IssueComment{Body: gh.Ptr(body)}); err != nil {
		return fmt.Errorf("comment on %s#%d: %w", repo, n, apiError(err))
	}
	return nil
}
