package healthcheck

import (
	"slices"
	"testing"
)

func TestCompare(t *testing.T) {
	res := func(pkg, sw string, st State) Result { return Result{Package: pkg, Switch: sw, State: st} }
	for _, tc := range []struct {
		name     string
		old, new []Result
		scope    DiffScope
		want     []PackageChange
	}{
		{name: "unchanged", old: []Result{res("a.1", "4.14", Good)}, new: []Result{res("a.1", "4.14", Good)}},
		{name: "now broken", old: []Result{res("a.1", "4.14", Good)}, new: []Result{res("a.1", "4.14", Bad)},
			want: []PackageChange{{Package: "a.1", Switch: "4.14", Change: NowBroken, Old: Good, New: Bad}}},
		{name: "dependency now broken", old: []Result{res("a.1", "4.14", Good)}, new: []Result{res("a.1", "4.14", Partial)},
			want: []PackageChange{{Package: "a.1", Switch: "4.14", Change: NowBroken, Old: Good, New: Partial}}},
		{name: "broken after an internal failure", old: []Result{res("a.1", "4.14", InternalFailure)}, new: []Result{res("a.1", "4.14", Bad)},
			want: []PackageChange{{Package: "a.1", Switch: "4.14", Change: NowBroken, Old: InternalFailure, New: Bad}}},
		{name: "now fixed", old: []Result{res("a.1", "5.3", Bad)}, new: []Result{res("a.1", "5.3", Good)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: NowFixed, Old: Bad, New: Good}}},
		{name: "now installable", old: []Result{res("a.1", "5.3", NotAvailable)}, new: []Result{res("a.1", "5.3", Bad)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: NowInstallable, Old: NotAvailable, New: Bad}}},
		{name: "new package", new: []Result{res("b.2", "5.3", Good)},
			want: []PackageChange{{Package: "b.2", Switch: "5.3", Change: NowInstallable, New: Good}}},
		{name: "new package not available", new: []Result{res("b.2", "5.3", NotAvailable)}},
		{name: "no longer available", old: []Result{res("a.1", "5.3", Good)}, new: []Result{res("a.1", "5.3", NotAvailable)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: NoLongerAvailable, Old: Good, New: NotAvailable}}},
		{name: "removed package", old: []Result{res("a.1", "5.3", Bad)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: NoLongerAvailable, Old: Bad}}},
		{name: "removed package, candidate scope", old: []Result{res("a.1", "5.3", Bad)}, scope: NewRunOnly},
		{name: "bad to partial", old: []Result{res("a.1", "5.3", Bad)}, new: []Result{res("a.1", "5.3", Partial)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: StateChanged, Old: Bad, New: Partial}}},
		{name: "good to internal failure", old: []Result{res("a.1", "5.3", Good)}, new: []Result{res("a.1", "5.3", InternalFailure)},
			want: []PackageChange{{Package: "a.1", Switch: "5.3", Change: StateChanged, Old: Good, New: InternalFailure}}},
		{name: "pending is left out", old: []Result{res("a.1", "5.3", Good)}, new: []Result{res("a.1", "5.3", Pending)}},
		{name: "sorted by package then switch",
			old: []Result{res("b.1", "5.3", Good), res("a.1", "5.3", Good), res("a.1", "4.14", Good)},
			new: []Result{res("b.1", "5.3", Bad), res("a.1", "5.3", Bad), res("a.1", "4.14", Bad)},
			want: []PackageChange{
				{Package: "a.1", Switch: "4.14", Change: NowBroken, Old: Good, New: Bad},
				{Package: "a.1", Switch: "5.3", Change: NowBroken, Old: Good, New: Bad},
				{Package: "b.1", Switch: "5.3", Change: NowBroken, Old: Good, New: Bad}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Compare(1, 2, tc.old, tc.new, tc.scope)
			if d.Old != 1 || d.New != 2 {
				t.Errorf("diff of runs %d..%d, want 1..2", d.Old, d.New)
			}
			if !slices.EqualFunc(d.Changes, tc.want, func(a, b PackageChange) bool {
				return a.Package == b.Package && a.Switch == b.Switch && a.Change == b.Change && a.Old == b.Old && a.New == b.New
			}) {
				t.Errorf("changes\n%+v\nwant\n%+v", d.Changes, tc.want)
			}
		})
	}
}

func TestDiffOfAndCount(t *testing.T) {
	d := Diff{Changes: []PackageChange{{Package: "a.1", Change: NowBroken}, {Package: "b.1", Change: NowFixed}, {Package: "c.1", Change: NowBroken}}}
	for _, tc := range []struct {
		change Change
		want   []string
	}{
		{NowBroken, []string{"a.1", "c.1"}},
		{NowFixed, []string{"b.1"}},
		{NowInstallable, nil},
	} {
		t.Run(string(tc.change), func(t *testing.T) {
			var got []string
			for _, pc := range d.Of(tc.change) {
				got = append(got, pc.Package)
			}
			if !slices.Equal(got, tc.want) || d.Count()[tc.change] != len(tc.want) {
				t.Errorf("Of = %q, Count = %d; want %q", got, d.Count()[tc.change], tc.want)
			}
		})
	}
}

func TestCompareKeepsFailureKindAndMaintainers(t *testing.T) {
	d := Compare(1, 2, []Result{{Package: "a.1", Switch: "s", State: Good}},
		[]Result{{Package: "a.1", Switch: "s", State: Bad, Kind: KindTest, Maintainers: []string{"m@example.org"}}}, WholeRuns)
	if len(d.Changes) != 1 || d.Changes[0].Kind != KindTest || !slices.Equal(d.Changes[0].Maintainers, []string{"m@example.org"}) {
		t.Errorf("changes %+v, want one with kind test and its maintainer", d.Changes)
	}
}
