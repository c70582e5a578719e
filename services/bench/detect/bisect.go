package detect

import (
	"context"
	"fmt"
)

// Probe runs a commit of a range and says whether it has the regression (for example
// by an interleaved run of the commit against the last good one).
type Probe func(ctx context.Context, commit string) (bad bool, err error)

// Bisection is the outcome of Bisect.
type Bisection struct {
	// FirstBad is the first commit with the regression.
	FirstBad string `json:"first_bad"`
	// LastGood is the commit before it.
	LastGood string `json:"last_good"`
	// Probed lists the commits run, in order, with their answers.
	Probed []Probed `json:"probed"`
}

// Probed is one commit run during a bisection.
type Probed struct {
	Commit string `json:"commit"`
	Bad    bool   `json:"bad"`
}

// Bisect finds the first bad commit of commits, oldest first, where commits[0] is known
// good and the last one known bad, probing about log2(len) commits between them.
func Bisect(ctx context.Context, commits []string, probe Probe) (Bisection, error) {
	var b Bisection
	if len(commits) < 2 {
		return b, fmt.Errorf("bisect: %d commits; a good and a bad one are needed", len(commits))
	}
	good, bad := 0, len(commits)-1
	for bad-good > 1 {
		mid := good + (bad-good)/2
		isBad, err := probe(ctx, commits[mid])
		if err != nil {
			return b, fmt.Errorf("bisect: probe %s: %w", commits[mid], err)
		}
		b.Probed = append(b.Probed, Probed{commits[mid], isBad})
		if isBad {
			bad = mid
		} else {
			good = mid
		}
	}
	b.FirstBad, b.LastGood = commits[bad], commits[good]
	return b, nil
}
