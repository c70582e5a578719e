package healthcheck

import (
	"sort"
)

// Change is how a (package, switch) differs from one run to another.
type Change string

// The kinds of change, the reference's categories. A result only one of the runs has,
// or that is not available in it, counts as not available there.
const (
	// NowBroken: it fails (bad or partial) where it built, or failed for the
	// infrastructure only, before.
	NowBroken Change = "now-broken"
	// NowFixed: it builds where it failed before.
	NowFixed Change = "now-fixed"
	// NowInstallable: it has a solution where it had none before.
	NowInstallable Change = "now-installable"
	// NoLongerAvailable: it had a solution before and has none now.
	NoLongerAvailable Change = "no-longer-available"
	// StateChanged: any other change of state (bad to partial, good to internal
	// failure, …).
	StateChanged Change = "state-changed"
)

// Changes lists the kinds of change in the order pages show them.
var Changes = []Change{NowBroken, NowFixed, NowInstallable, NoLongerAvailable, StateChanged}

// Title is how pages head a kind of change.
func (c Change) Title() string {
	switch c {
	case NowBroken:
		return "Now broken"
	case NowFixed:
		return "Now fixed"
	case NowInstallable:
		return "Now installable"
	case NoLongerAvailable:
		return "No longer available"
	}
	return "Other changes"
}

// PackageChange is one (package, switch) whose state changed between two runs. Old or
// New is "" where that run has no result for it.
type PackageChange struct {
	Package string `json:"package"`
	Switch  string `json:"switch"`
	Change  Change `json:"change"`
	Old     State  `json:"old,omitempty"`
	New     State  `json:"new,omitempty"`
	// Kind is why the new result failed, when it did.
	Kind        Kind     `json:"kind,omitempty"`
	Maintainers []string `json:"maintainers,omitempty"`
}

// Diff is what changed from run Old to run New, by package then switch.
type Diff struct {
	Old     int64           `json:"old"`
	New     int64           `json:"new"`
	Changes []PackageChange `json:"changes"`
}

// Of is the changes of kind c.
func (d Diff) Of(c Change) []PackageChange {
	var out []PackageChange
	for _, pc := range d.Changes {
		if pc.Change == c {
			out = append(out, pc)
		}
	}
	return out
}

// Count is the number of changes of each kind.
func (d Diff) Count() map[Change]int {
	n := map[Change]int{}
	for _, pc := range d.Changes {
		n[pc.Change]++
	}
	return n
}

// DiffScope says which results a diff compares.
type DiffScope int

const (
	// WholeRuns compares every (package, switch) of either run.
	WholeRuns DiffScope = iota
	// NewRunOnly compares only what the new run built: a candidate run limited to the
	// packages a change can affect says nothing of the others.
	NewRunOnly
)

type resultKey struct{ pkg, sw string }

// Compare is the diff from the results of run old to those of run new. Pending
// results (not built yet) are left out on either side.
func Compare(oldRun, newRun int64, old, new []Result, scope DiffScope) Diff {
	d := Diff{Old: oldRun, New: newRun}
	before := make(map[resultKey]Result, len(old))
	for _, r := range old {
		if r.State != Pending {
			before[resultKey{r.Package, r.Switch}] = r
		}
	}
	seen := make(map[resultKey]bool, len(new))
	for _, r := range new {
		k := resultKey{r.Package, r.Switch}
		seen[k] = true
		if r.State == Pending {
			continue
		}
		o, had := before[k]
		var oldState State
		if had {
			oldState = o.State
		}
		if c, ok := classify(oldState, r.State); ok {
			d.Changes = append(d.Changes, PackageChange{Package: r.Package, Switch: r.Switch, Change: c,
				Old: oldState, New: r.State, Kind: failureKind(r), Maintainers: r.Maintainers})
		}
	}
	if scope == WholeRuns {
		for k, o := range before {
			if seen[k] {
				continue
			}
			if c, ok := classify(o.State, ""); ok {
				d.Changes = append(d.Changes, PackageChange{Package: o.Package, Switch: o.Switch, Change: c,
					Old: o.State, Maintainers: o.Maintainers})
			}
		}
	}
	sort.Slice(d.Changes, func(i, j int) bool {
		a, b := d.Changes[i], d.Changes[j]
		if a.Package != b.Package {
			return a.Package < b.Package
		}
		return a.Switch < b.Switch
	})
	return d
}

func failureKind(r Result) Kind {
	if r.State == Good {
		return KindNone
	}
	return r.Kind
}

// classify is the change from state a to state b ("" for no result), if any.
func classify(a, b State) (Change, bool) {
	unavailable := func(s State) bool { return s == "" || s == NotAvailable }
	switch {
	case a == b || unavailable(a) && unavailable(b):
		return "", false
	case unavailable(a):
		return NowInstallable, true
	case unavailable(b):
		return NoLongerAvailable, true
	case b.Failed() && !a.Failed():
		return NowBroken, true
	case b == Good:
		return NowFixed, true
	}
	return StateChanged, true
}
