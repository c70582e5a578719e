package forge

import (
	"context"
	"fmt"
	"strings"
)

// Check names one of several statuses a service shows on a commit (opam-repo-ci shows
// "opam-ci" and "opam-repo-ci (linter)"). The zero Check is the publisher's default
// status.
type Check struct {
	// Name is the status's context on Gitea, the check run's name on GitHub; "" is the
	// publisher's default name.
	Name string
	// URL is the status's details page; "" is the publisher's default (the commit's
	// page in kiln's UI).
	URL string
}

// CheckPublisher shows a commit's status under a check of the caller's.
type CheckPublisher interface {
	PublishCheck(ctx context.Context, ref Ref, check Check, st Status, variants []Variant) error
}

// Commenter keeps one comment on a pull request, found again by a marker it holds
// and updated in place.
type Commenter interface {
	// Comment makes the comment of ref's pull request that holds marker say body
	// (body is given the marker when it lacks it): updated when there is one,
	// created otherwise.
	Comment(ctx context.Context, ref Ref, marker, body string) error
}

// CommentMarker is the hidden line (an HTML comment, which forges do not show) that
// finds a service's comment on a pull request again.
func CommentMarker(name string) string { return "<!-- kiln:" + name + " -->" }

// WithMarker returns body holding marker: unchanged when it has it, else with the
// marker as its first line.
func WithMarker(body, marker string) string {
	if strings.Contains(body, marker) {
		return body
	}
	return marker + "\n" + body
}

// CommentTarget checks that a comment can be kept on pull request n of repo (named
// for messages) with marker, and returns body holding the marker.
func CommentTarget(repo string, n int, marker, body string) (string, error) {
	if n <= 0 {
		return "", fmt.Errorf("comment on %s: %d is not a pull request number", repo, n)
	}
	if marker == "" {
		return "", fmt.Errorf("comment on %s#%d: no marker to find it again by", repo, n)
	}
	return WithMarker(body, marker), nil
}
