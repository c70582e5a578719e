package github

import (
	"fmt"
	"strings"
	"time"
)

// Repo names a repository on GitHub.
type Repo struct {
	Owner string
	Name  string
}

func (r Repo) String() string { return r.Owner + "/" + r.Name }

// ParseRepo parses "owner/name".
func ParseRepo(full string) (Repo, error) {
	owner, name, ok := strings.Cut(full, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return Repo{}, fmt.Errorf("repository %q: want owner/name", full)
	}
	return Repo{Owner: owner, Name: name}, nil
}

// Meta is what every event carries.
type Meta struct {
	Delivery     string // X-GitHub-Delivery
	Event        string // X-GitHub-Event
	Action       string // the payload's action, when it has one
	Installation int64  // the App installation the event is for (0 without an App)
	Account      string // the account (user or organisation) the event is about
}

// Event is one parsed webhook delivery: *PushEvent, *PullRequestEvent, *RerunEvent,
// *CheckSuiteEvent, *RepositoryEvent, *InstallationEvent or *PingEvent.
type Event interface {
	Meta() Meta
}

// PushEvent: commits were pushed to a branch or tag (or it was deleted).
type PushEvent struct {
	meta          Meta
	Repo          Repo
	CloneURL      string
	Private       bool
	DefaultBranch string
	Ref           string // "refs/heads/main"
	Before, After string // commits before and after the push (After is all zeros on delete)
	Deleted       bool
}

// PullRequestEvent: a pull request was opened, updated, closed, …
type PullRequestEvent struct {
	meta      Meta
	Repo      Repo // the base repository
	CloneURL  string
	Private   bool
	Number    int
	Title     string
	State     string // "open" or "closed"
	Draft     bool
	Author    string
	HeadSHA   string
	HeadRef   string // the branch name in the head repository
	HeadRepo  Repo   // the head repository (a fork, or the base repository)
	BaseRef   string
	BaseSHA   string
	UpdatedAt time.Time
}

// Ref is the ref of the pull request's head in the base repository.
func (e *PullRequestEvent) Ref() string { return fmt.Sprintf("refs/pull/%d/head", e.Number) }

// MovesHead reports whether the action can change which commit the pull request's ref
// points at, or whether it is open: opened, reopened, synchronize and closed do; edited
// (title, body, base), ready_for_review and converted_to_draft do not.
func (e *PullRequestEvent) MovesHead() bool {
	switch e.meta.Action {
	case "opened", "reopened", "synchronize", "closed":
		return true
	}
	return false
}

// Branch is the branch a push updated or deleted, and false for a tag or another ref.
func (e *PushEvent) Branch() (string, bool) { return strings.CutPrefix(e.Ref, "refs/heads/") }

// CheckSuiteEvent: GitHub asks the App for the checks of a new head commit (check_suite
// requested, sent to Apps with the Checks permission on every push).
type CheckSuiteEvent struct {
	meta         Meta
	Repo         Repo
	CheckSuiteID int64
	HeadSHA      string
	HeadBranch   string // empty for a commit pushed to no branch (a fork's pull request)
}

// RepositoryEvent: a repository was renamed, transferred, archived, unarchived or
// deleted, or its default branch changed (repository edited).
type RepositoryEvent struct {
	meta Meta
	// Repo is the repository's name now (before the deletion, for deleted).
	Repo Repo
	// ID is GitHub's number for the repository; a rename or a transfer keeps it.
	ID int64
	// From is the name before a rename or transfer (zero otherwise).
	From     Repo
	CloneURL string
	Archived bool
}

// Gone reports whether the repository is no longer to be built: deleted or archived.
func (e *RepositoryEvent) Gone() bool {
	return e.meta.Action == "deleted" || e.meta.Action == "archived"
}

// RerunEvent: someone asked GitHub to re-run a check run or a whole check suite.
type RerunEvent struct {
	meta            Meta
	Repo            Repo
	HeadSHA         string
	HeadBranch      string
	CheckSuiteID    int64
	CheckRunID      int64  // 0 when the whole suite is re-run
	CheckName       string // the check run's name, when one run is re-run
	RequestedAction string // the identifier of a check run action button, if one was pressed
}

// InstallationEvent: the App was installed or removed, or the repositories it may access
// changed (installation and installation_repositories events).
type InstallationEvent struct {
	meta      Meta
	Selection string // "all" or "selected"
	Added     []Repo
	Removed   []Repo
}

// PingEvent: GitHub checks that the webhook works.
type PingEvent struct {
	meta Meta
	Zen  string
}

// Meta returns what every event carries.
func (e *PushEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *PullRequestEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *RerunEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *InstallationEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *CheckSuiteEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *RepositoryEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *PingEvent) Meta() Meta { return e.meta }

// payload is the part of GitHub's webhook payloads that CI reads.
type payload struct {
	Action       string `json:"action"`
	Zen          string `json:"zen"`
	Installation *struct {
		ID                  int64           `json:"id"`
		Account             *payloadAccount `json:"account"`
		RepositorySelection string          `json:"repository_selection"`
	} `json:"installation"`
	Repository      *payloadRepo  `json:"repository"`
	Ref             string        `json:"ref"`
	Before          string        `json:"before"`
	After           string        `json:"after"`
	Deleted         bool          `json:"deleted"`
	Number          int           `json:"number"`
	PullRequest     *payloadPR    `json:"pull_request"`
	CheckRun        *payloadRun   `json:"check_run"`
	CheckSuite      *payloadSuite `json:"check_suite"`
	RequestedAction *struct {
		Identifier string `json:"identifier"`
	} `json:"requested_action"`
	RepositorySelection string        `json:"repository_selection"`
	Repositories        []payloadRepo `json:"repositories"`
	RepositoriesAdded   []payloadRepo `json:"repositories_added"`
	RepositoriesRemoved []payloadRepo `json:"repositories_removed"`
	Changes             *struct {
		Repository *struct {
			Name *struct {
				From string `json:"from"`
			} `json:"name"`
		} `json:"repository"`
		Owner *struct {
			From struct {
				User         *payloadAccount `json:"user"`
				Organization *payloadAccount `json:"organization"`
			} `json:"from"`
		} `json:"owner"`
		DefaultBranch *struct {
			From string `json:"from"`
		} `json:"default_branch"`
	} `json:"changes"`
}

type payloadAccount struct {
	Login string `json:"login"`
}

type payloadRepo struct {
	ID            int64           `json:"id"`
	Name          string          `json:"name"`
	FullName      string          `json:"full_name"`
	Owner         *payloadAccount `json:"owner"`
	CloneURL      string          `json:"clone_url"`
	Private       bool            `json:"private"`
	DefaultBranch string          `json:"default_branch"`
	Archived      bool            `json:"archived"`
}

func (r payloadRepo) repo(field string) (Repo, error) {
	if r.FullName != "" {
		rr, err := ParseRepo(r.FullName)
		if err != nil {
			return Repo{}, fmt.Errorf("%s.full_name: %w", field, err)
		}
		return rr, nil
	}
	if r.Owner != nil && r.Owner.Login != "" && r.Name != "" {
		return Repo{Owner: r.Owner.Login, Name: r.Name}, nil
	}
	return Repo{}, fmt.Errorf("field %s.full_name is missing", field)
}

// fromFullName reads the short repository objects of installation events.
func (r payloadRepo) fromFullName(account string) (Repo, error) {
	if r.FullName != "" {
		return ParseRepo(r.FullName)
	}
	if r.Name != "" {
		return Repo{Owner: account, Name: r.Name}, nil
	}
	return Repo{}, fmt.Errorf("field full_name is missing")
}

type payloadPR struct {
	Number    int             `json:"number"`
	State     string          `json:"state"`
	Title     string          `json:"title"`
	Draft     bool            `json:"draft"`
	User      *payloadAccount `json:"user"`
	UpdatedAt time.Time       `json:"updated_at"`
	Head      payloadBranch   `json:"head"`
	Base      payloadBranch   `json:"base"`
}

type payloadBranch struct {
	Ref  string       `json:"ref"`
	SHA  string       `json:"sha"`
	Repo *payloadRepo `json:"repo"`
}

type payloadRun struct {
	ID         int64         `json:"id"`
	Name       string        `json:"name"`
	HeadSHA    string        `json:"head_sha"`
	CheckSuite *payloadSuite `json:"check_suite"`
}

type payloadSuite struct {
	ID         int64  `json:"id"`
	HeadSHA    string `json:"head_sha"`
	HeadBranch string `json:"head_branch"`
}
