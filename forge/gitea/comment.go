package gitea

import (
	"context"
	"fmt"
	"strings"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/kiln-ci/kiln/forge"
)

// Comment is a comment on a pull request or issue.
type Comment struct {
	ID     int64
	Author string
	Body   string
}

// Comments lists the comments of pull request (or issue) number n, oldest first.
func (c *Client) Comments(ctx context.Context, repo Repo, n int) ([]Comment, error) {
	api := c.api(ctx)
	var out []Comment
	for page := 1; ; page++ {
		cs, resp, err := api.ListIssueComments(repo.Owner, repo.Name, int64(n), sdk.ListIssueCommentOptions{ListOptions: sdk.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, fmt.Errorf("comments of %s#%d: %w", repo, n, apiError(resp, err))
		}
		for _, x := range cs {
			cm := Comment{ID: x.ID, Body: x.Body}
			if x.Poster != nil {
				cm.Author = x.Poster.UserName
			}
			out = append(out, cm)
		}
		if len(cs) == 0 || resp == nil || resp.NextPage == 0 {
			return out, nil
		}
	}
}

// UpsertComment makes the comment of pull request n that holds marker say body (with
// the marker): it edits the first such comment, or creates one.
func (c *Client) UpsertComment(ctx context.Context, repo Repo, n int, marker, body string) error {
	body, err := forge.CommentTarget(repo.String(), n, marker, body)
	if err != nil {
		return err
	}
	cs, err := c.Comments(ctx, repo, n)
	if err != nil {
		return err
	}
	api := c.api(ctx)
	for _, cm := range cs {
		if !strings.Contains(cm.Body, marker) {
			continue
		}
		if cm.Body == body {
			return nil
		}
		if _, resp, err := api.EditIssueComment(repo.Owner, repo.Name, cm.ID, sdk.EditIssueCommentOption{Body: body}); err != nil {
			return fmt.Errorf("edit comment %d of %s#%d: %w", cm.ID, repo, n, apiError(resp, err))
		}
		return nil
	}
	if _, resp, err := api.CreateIssueComment(repo.Owner, repo.Name, int64(n), sdk.CreateIssueCommentOption{Body: body}); err != nil {
		return fmt.Errorf("comment on %s#%d: %w", repo, n, apiError(resp, err))
	}
	return nil
}
