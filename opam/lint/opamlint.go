package lint

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kiln-ci/kiln/opam"
)

// knownFields are the fields of an opam 2.x package file.
var knownFields = map[string]bool{
	"opam-version": true, "name": true, "version": true, "maintainer": true, "authors": true,
	"author": true, "license": true, "homepage": true, "doc": true, "bug-reports": true,
	"dev-repo": true, "tags": true, "synopsis": true, "description": true, "setenv": true,
	"build": true, "install": true, "build-env": true, "run-test": true, "remove": true,
	"depends": true, "depopts": true, "conflicts": true, "conflict-class": true,
	"available": true, "flags": true, "depexts": true, "messages": true, "post-messages": true,
	"patches": true, "substs": true, "extra-files": true, "features": true, "pin-depends": true,
	"libraries": true, "syntax": true, "build-test": true, "build-doc": true,
	"ocaml-version": true, "os": true,
}

var knownSections = map[string]bool{"url": true, "extra-source": true}

var knownURLFields = map[string]bool{
	"src": true, "archive": true, "http": true, "git": true, "darcs": true, "hg": true,
	"local": true, "checksum": true, "mirrors": true, "swhid": true,
}

var knownFlags = map[string]bool{
	"light-uninstall": true, "verbose": true, "plugin": true, "compiler": true, "conf": true,
	"avoid-version": true, "deprecated": true,
}

func (l *linter) itemPos(name string) opam.Pos {
	for _, it := range l.f.Items {
		if it.Name == name {
			return it.Pos
		}
	}
	return opam.Pos{}
}

func detail(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return ": \"" + strings.Join(list, "\", \"") + "\""
}

// commands gathers every command field, with the name of each command's field.
func (l *linter) commands() (all []opam.Command, runTest []opam.Command) {
	for _, name := range []string{"build", "install", "remove", "run-test", "build-doc"} {
		cs, err := l.f.Commands(name)
		if err != nil {
			continue
		}
		all = append(all, cs...)
		if name == "run-test" {
			runTest = cs
		}
	}
	return all, runTest
}

// filteredStrings reads a field of `"text" {filter}` entries (messages, patches,
// post-messages).
func filteredStrings(v *opam.Value) (strs []string, filters []opam.Filter) {
	for _, e := range v.Elems() {
		base, opts := e.Strip()
		if base.Kind == opam.KString {
			strs = append(strs, base.S)
		}
		if len(opts) > 0 {
			if fl, err := opam.ParseFilterList("", opts); err == nil {
				filters = append(filters, fl)
			}
		}
	}
	return strs, filters
}

type formulas struct {
	depends, depopts, conflicts opam.Formula[opam.Dependency]
	// Filters of the conditions of each formula, computed once.
	dependsF, depoptsF, conflictsF []opam.Filter
}

// filterAtoms returns the conditions of a formula that are filters, not version
// constraints.
func filterAtoms(f opam.Formula[opam.Dependency]) []opam.Filter {
	var out []opam.Filter
	for _, d := range f.Atoms() {
		for _, c := range d.Cond.Atoms() {
			if c.Op == opam.OpNone {
				out = append(out, c.Filter)
			}
		}
	}
	return out
}

func condFilters(f opam.Formula[opam.Dependency]) []opam.Filter {
	var out []opam.Filter
	for _, d := range f.Atoms() {
		for _, c := range d.Cond.Atoms() {
			out = append(out, c.Filter)
		}
	}
	return out
}

// allFilters returns the filters of the file outside commands, as opam's lint sees
// them.
func (l *linter) allFilters(fm formulas, excludePost bool) []opam.Filter {
	var out []opam.Filter
	for _, name := range []string{"patches", "messages", "post-messages", "libraries", "syntax"} {
		if excludePost && name == "post-messages" {
			continue
		}
		if v, ok := l.f.Field(name); ok {
			_, fs := filteredStrings(v)
			out = append(out, fs...)
		}
	}
	if dx, err := l.f.Depexts(); err == nil {
		for _, d := range dx {
			if d.Filter != nil {
				out = append(out, *d.Filter)
			}
		}
	}
	if av, err := l.f.Available(); err == nil {
		out = append(out, av)
	}
	out = append(out, fm.dependsF...)
	out = append(out, fm.depoptsF...)
	out = append(out, fm.conflictsF...)
	return out
}

func commandVariables(cs []opam.Command) []string {
	var out []string
	for _, c := range cs {
		for _, a := range c.Args {
			switch a.Value.Kind {
			case opam.KString:
				out = append(out, opam.InterpolatedVariables(a.Value.S)...)
			case opam.KIdent:
				out = append(out, a.Value.S)
			}
			if a.Filter != nil {
				out = append(out, a.Filter.Variables()...)
			}
		}
		if c.Filter != nil {
			out = append(out, c.Filter.Variables()...)
		}
	}
	return out
}

func filterVariables(fs []opam.Filter) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Variables()...)
	}
	return out
}

// isGlobal reports whether a variable has no package scope.
func isGlobal(v string) bool { return !strings.Contains(v, ":") }

func namesOf(f opam.Formula[opam.Dependency], flag bool) map[opam.PackageName]bool {
	d := opam.DepsEnv{Build: true, Post: true, Dev: true, WithTest: flag, WithDoc: flag}
	out := map[opam.PackageName]bool{}
	for _, n := range opam.Names(d.Resolve(f)) {
		out[n] = true
	}
	return out
}

func sortedNames(m map[opam.PackageName]bool) []string {
	var out []string
	for n := range m {
		out = append(out, string(n))
	}
	sort.Strings(out)
	return out
}

func (l *linter) opamLint() {
	f := l.f
	// A repeated field makes opam reject the file before any other check.
	seen := map[string]bool{}
	for _, it := range f.Items {
		if it.Section != nil && it.Name == "extra-source" {
			continue
		}
		if seen[it.Name] && !(l.opam21() && strings.HasPrefix(it.Name, "x-")) {
			// opam 2.1 keeps the last of repeated extension fields.
			l.add("opam-3", Error, it.Pos, "File format error in '%s' at line %d, column %d: Duplicate field %s", it.Name, it.Pos.Line, it.Pos.Col-1, it.Name)
			return
		}
		seen[it.Name] = true
	}
	// 3: unknown fields and fields of the wrong type.
	for _, it := range f.Items {
		switch {
		case it.Section != nil && !knownSections[it.Name]:
			l.add("opam-3", Error, it.Pos, "File format error in '%s': Invalid section %s", it.Name, it.Name)
		case it.Section != nil:
			for _, x := range it.Section.Items {
				if !knownURLFields[x.Name] && !strings.HasPrefix(x.Name, "x-") {
					l.add("opam-3", Error, x.Pos, "File format error in '%s.%s': Invalid field %s", it.Name, x.Name, x.Name)
				}
			}
		case !knownFields[it.Name] && !strings.HasPrefix(it.Name, "x-"):
			l.add("opam-3", Error, it.Pos, "File format error in '%s': Invalid field %s", it.Name, it.Name)
		}
	}
	formatErr := func(field string, err error) {
		if err == nil {
			return
		}
		pos := l.itemPos(field)
		msg := err.Error()
		if e, ok := unwrapOpamError(err); ok {
			pos, msg = e.Pos, strings.TrimPrefix(e.Msg, "field "+field+": ")
		}
		l.add("opam-3", Error, pos, "File format error in '%s': %s", field, msg)
	}
	var fm formulas
	var err error
	fm.depends, err = f.Depends()
	formatErr("depends", err)
	fm.depopts, err = f.Depopts()
	formatErr("depopts", err)
	fm.conflicts, err = f.Conflicts()
	formatErr("conflicts", err)
	_, err = f.Available()
	formatErr("available", err)
	fm.dependsF, fm.depoptsF, fm.conflictsF = condFilters(fm.depends), condFilters(fm.depopts), condFilters(fm.conflicts)
	for _, name := range []string{"build", "install", "remove", "run-test", "build-test", "build-doc"} {
		_, err = f.Commands(name)
		formatErr(name, err)
	}
	url, err := f.URL()
	formatErr("url", err)
	extra, err := f.ExtraSources()
	formatErr("extra-source", err)
	_, err = f.Depexts()
	formatErr("depexts", err)
	pins, err := f.PinDepends()
	formatErr("pin-depends", err)
	extraFiles, err := f.ExtraFiles()
	formatErr("extra-files", err)
	for _, name := range []string{"maintainer", "authors", "license", "homepage", "bug-reports", "tags", "doc", "conflict-class"} {
		_, err = f.StringList(name)
		formatErr(name, err)
	}
	if v, ok := f.Field("flags"); ok {
		for _, e := range v.Elems() {
			if e.Kind != opam.KIdent {
				l.add("opam-3", Error, e.Pos, "File format error in 'flags': expected an identifier, found %s", e.Kind)
				break
			}
		}
	}
	for _, name := range []string{"opam-version", "name", "version", "synopsis", "description", "dev-repo"} {
		if v, ok := f.Field(name); ok && v.Kind != opam.KString {
			l.add("opam-3", Error, v.Pos, "File format error in '%s': expected a string, found %s", name, v.Kind)
		}
	}

	// 4: name and version against the directory.
	if n := f.Name(); n != "" && l.in.Package.Name != "" && n != l.in.Package.Name {
		l.add("opam-4", Warning, l.itemPos("name"), "Field 'name: %q' while the directory name or pinning implied %q", n, l.in.Package.Name)
	}
	if v := f.Version(); v != "" && l.in.Package.Version != "" && v != l.in.Package.Version {
		l.add("opam-4", Warning, l.itemPos("version"), "Field 'version: %q' while the directory name or pinning implied %q", v, l.in.Package.Version)
	}

	ov := f.OpamVersion()
	if ov == "" {
		ov = "1.2"
	}
	// 20, 21: opam-version.
	if noPatch(ov) != ov {
		l.add("opam-20", Warning, l.itemPos("opam-version"), "Field 'opam-version' refers to the patch version of opam, it should be of the form MAJOR.MINOR: %q", ov)
	}
	if opam.CompareVersions(ov, "2.0") != 0 {
		l.add("opam-21", Error, l.itemPos("opam-version"), "Field 'opam-version' doesn't match the current version, validation may not be accurate: %q", ov)
	}
	// 22: fields present but empty.
	var empty []string
	for _, name := range []string{"maintainer", "homepage", "authors", "license", "doc", "tags", "bug-reports"} {
		if v, ok := f.Field(name); ok {
			es := v.Elems()
			if len(es) == 1 && es[0].Kind == opam.KString && es[0].S == "" {
				empty = append(empty, name)
			}
		}
	}
	if len(empty) > 0 {
		l.add("opam-22", Error, l.itemPos(empty[0]), "Some fields are present but empty; remove or fill them%s", detail(empty))
	}
	maint := f.Maintainer()
	if len(maint) == 0 {
		l.add("opam-23", Error, opam.Pos{}, "Missing field 'maintainer'")
	}
	if contains(maint, "contact@ocamlpro.com") && !contains(f.Tags(), "org:ocamlpro") {
		l.add("opam-24", Error, l.itemPos("maintainer"), "Field 'maintainer' has the old default value")
	}
	authors := f.Authors()
	if len(authors) == 0 {
		if a, _ := f.StringList("author"); len(a) == 0 {
			l.add("opam-25", Warning, opam.Pos{}, "Missing field 'authors'")
		}
	}
	build, _ := f.Build()
	install, _ := f.Install()
	remove, _ := f.Remove()
	if len(install) == 0 && len(build) > 0 && len(remove) > 0 {
		l.add("opam-26", Warning, l.itemPos("remove"), "No field 'install', but a field 'remove': install instructions probably part of 'build'. Use the 'install' field or a .install file")
	}
	var unknownFlags []string
	for _, fl := range l.flags() {
		if !knownFlags[fl] {
			unknownFlags = append(unknownFlags, fl)
		}
	}
	if len(unknownFlags) > 0 {
		l.add("opam-28", Error, l.itemPos("flags"), "Unknown package flags found%s", detail(unknownFlags))
	}
	var pkgVars []string
	// Variables of version constraints (`>= foo:version`) do not count, as in opam.
	scope := [][]opam.Filter{filterAtoms(fm.depends), filterAtoms(fm.depopts), filterAtoms(fm.conflicts)}
	msg29 := "Package dependencies or conflicts mention package variables"
	if l.opam21() {
		scope, msg29 = scope[:2], "Package dependencies mention package variables"
	}
	for _, fl := range scope {
		for _, v := range filterVariables(fl) {
			if !isGlobal(v) {
				pkgVars = append(pkgVars, v)
			}
		}
	}
	if len(pkgVars) > 0 {
		l.add("opam-29", Error, l.itemPos("depends"), "%s%s", msg29, detail(pkgVars))
	}
	dup := map[opam.PackageName]bool{}
	opt := namesOf(fm.depopts, true)
	for n := range namesOf(fm.depends, false) {
		if opt[n] {
			dup[n] = true
		}
	}
	if len(dup) > 0 {
		l.add("opam-31", Error, l.itemPos("depopts"), "Fields 'depends' and 'depopts' refer to the same package names%s", detail(sortedNames(dup)))
	}
	allCmds, runTest := l.commands()
	filters := l.allFilters(fm, false)
	allVars := append(commandVariables(allCmds), filterVariables(filters)...)
	if _, ok := f.Field("ocaml-version"); ok || contains(allVars, "ocaml-version") {
		l.add("opam-32", Error, l.itemPos("ocaml-version"), "Field 'ocaml-version:' and variable 'ocaml-version' are deprecated, use a dependency towards the 'ocaml' package instead for availability, and the 'ocaml:version' package variable for scripts")
	}
	if _, ok := f.Field("os"); ok {
		l.add("opam-33", Error, l.itemPos("os"), "Field 'os' is deprecated, use 'available' and the 'os' variable instead")
	}
	if av, err := f.Available(); err == nil {
		var pv []string
		for _, v := range av.Variables() {
			if !isGlobal(v) {
				pv = append(pv, v)
			}
		}
		if len(pv) > 0 {
			l.add("opam-34", Error, l.itemPos("available"), "Field 'available:' contains references to package-local variables. It should only be determined from global configuration variables%s", detail(pv))
		}
	}
	if len(f.Homepage()) == 0 {
		l.add("opam-35", Warning, opam.Pos{}, "Missing field 'homepage'")
	}
	if len(f.BugReports()) == 0 {
		l.add("opam-36", Warning, opam.Pos{}, "Missing field 'bug-reports'")
	}
	devRepo := f.DevRepo()
	if _, ok := f.Field("dev-repo"); !ok && url != nil {
		l.add("opam-37", Warning, opam.Pos{}, "Missing field 'dev-repo'")
	}
	for _, c := range allCmds {
		if len(c.Args) > 0 && c.Args[0].Value.Kind == opam.KString && c.Args[0].Value.S == "make" {
			l.add("opam-39", Error, c.Pos, "Command 'make' called directly, use the built-in variable instead")
			break
		}
	}
	// 41: packages used in variables without a dependency.
	allDeps := namesOf(fm.depends, true)
	for n := range namesOf(fm.depopts, true) {
		allDeps[n] = true
	}
	undep := map[opam.PackageName]bool{}
	for _, v := range append(commandVariables(allCmds), filterVariables(l.allFilters(fm, true))...) {
		pkgs, name := opam.SplitVariable(v)
		if name == "installed" {
			continue
		}
		for _, p := range pkgs {
			n := opam.PackageName(p)
			if p != "_" && n != l.pkg.Name && !allDeps[n] {
				undep[n] = true
			}
		}
	}
	if len(undep) > 0 {
		l.add("opam-41", Warning, opam.Pos{}, "Some packages are mentioned in package scripts or features, but there is no dependency or depopt toward them%s", detail(sortedNames(undep)))
	}
	if devRepo != "" && !isVCS(devRepo, false) {
		l.add("opam-42", Error, l.itemPos("dev-repo"), "The 'dev-repo:' field doesn't use version control. You should use URLs of the form \"git://\", \"git+https://\", \"hg+https://\"...")
	}
	if !conflictsOrsOnly(fm.conflicts) {
		l.add("opam-43", Error, l.itemPos("conflicts"), "Conjunction used in 'conflicts:' field. Only '|' is allowed")
	}
	if l.hasFlag("plugin") && !strings.HasPrefix(string(l.pkg.Name), "opam-") && l.pkg.Name != "" {
		l.add("opam-44", Warning, l.itemPos("flags"), "The 'plugin' package flag is set but the package name doesn't begin with 'opam-'")
	}
	// 45: unclosed interpolations.
	var strs []string
	for _, name := range []string{"messages", "post-messages"} {
		if v, ok := f.Field(name); ok {
			s, _ := filteredStrings(v)
			strs = append(strs, s...)
		}
	}
	for _, c := range allCmds {
		for _, a := range c.Args {
			if a.Value.Kind == opam.KString {
				strs = append(strs, a.Value.S)
			}
		}
	}
	for _, fl := range filters {
		strs = append(strs, filterStrings(&fl)...)
	}
	var unclosed []string
	for _, s := range strs {
		unclosed = append(unclosed, unclosedExpansions(s)...)
	}
	if len(unclosed) > 0 {
		l.add("opam-45", Error, opam.Pos{}, "Unclosed variable interpolations in strings%s", detail(unclosed))
	}
	if l.hasFlag("conf") && (len(install) > 0 || len(remove) > 0 || url != nil || len(extra) > 0) {
		l.add("opam-46", Error, l.itemPos("flags"), "Package is flagged \"conf\" but has source, install or remove instructions")
	}
	syn, hasDescr := l.synopsis()
	if l.opam21() {
		// opam 2.1 checks the synopsis whenever there is a synopsis or a description,
		// and finds it missing only when both are empty.
		if hasDescr && !validSynopsis(syn) {
			l.add("opam-47", Warning, l.itemPos("synopsis"), "Synopsis (or description first line) should start with a capital and not end with a dot")
		}
		if !hasDescr || (syn == "" && strings.TrimSpace(f.Description()) == "") {
			l.add("opam-57", Error, l.itemPos("synopsis"), "Synopsis must not be empty")
		}
	} else if syn != "" && !validSynopsis(syn) {
		if l.opam21() {
			l.add("opam-47", Warning, l.itemPos("synopsis"), "Synopsis (or description first line) should start with a capital and not end with a dot")
		} else {
			l.add("opam-47", Warning, l.itemPos("synopsis"), "Synopsis should start with a capital and not end with a dot")
		}
	}
	if _, ok := f.Field("build-test"); ok {
		l.add("opam-48", Warning, l.itemPos("build-test"), "The fields 'build-test:' and 'build-doc:' are deprecated, and should be replaced by uses of the 'with-test' and 'with-doc' filter variables in the 'build:' and 'install:' fields, and by the newer 'run-test:' field")
	} else if _, ok := f.Field("build-doc"); ok {
		l.add("opam-48", Warning, l.itemPos("build-doc"), "The fields 'build-test:' and 'build-doc:' are deprecated, and should be replaced by uses of the 'with-test' and 'with-doc' filter variables in the 'build:' and 'install:' fields, and by the newer 'run-test:' field")
	}
	// 49: URLs that look like version control but are not.
	var suspicious []string
	var urls []string
	if url != nil {
		urls = append(append(urls, url.Src), url.Mirrors...)
	}
	for _, e := range extra {
		urls = append(append(urls, e.Src), e.Mirrors...)
	}
	for _, p := range pins {
		urls = append(urls, p.URL)
	}
	if devRepo != "" {
		urls = append(urls, devRepo)
	}
	for _, u := range urls {
		if looksVCS(u) && !isVCS(u, false) {
			suspicious = append(suspicious, u)
		}
	}
	if len(suspicious) > 0 {
		l.add("opam-49", Warning, l.itemPos("url"), "The following URLs don't use version control but look like version control URLs%s", detail(suspicious))
	}
	if postMisuse(fm) {
		l.add("opam-50", Warning, l.itemPos("depends"), "The 'post' flag doesn't make sense with build or optional dependencies")
	}
	negated := false
	for _, fl := range append(fm.dependsF[:len(fm.dependsF):len(fm.dependsF)], fm.depoptsF...) {
		if negatesBuildOrPost(&fl, false) {
			negated = true
		}
	}
	if negated {
		l.add("opam-51", Error, l.itemPos("depends"), "The behaviour for negated dependency flags 'build' or 'post' is unspecified")
	}
	if l.hasFlag("light-uninstall") && len(remove) == 0 {
		l.add("opam-52", Error, l.itemPos("flags"), "Package is needlessly flagged \"light-uninstall\", since it has no remove instructions")
	}
	if _, ok := f.Field("extra-files"); ok {
		if bad := l.mismatchingExtraFiles(extraFiles); len(bad) > 0 {
			l.add("opam-53", Error, l.itemPos("extra-files"), "Mismatching 'extra-files:' field%s", detail(bad))
		}
	}
	if dx, err := f.Depexts(); err == nil {
		var spaced []string
		for _, d := range dx {
			for _, p := range d.Packages {
				if p == "" || strings.Contains(p, " ") {
					spaced = append(spaced, p)
				}
			}
		}
		if len(spaced) > 0 {
			l.add("opam-54", Warning, l.itemPos("depexts"), "External dependencies should not contain spaces nor empty string%s", detail(spaced))
		}
	}
	var badOS []string
	for _, fl := range filters {
		badOS = append(badOS, nonNormalised(&fl)...)
	}
	if len(badOS) > 0 {
		l.add("opam-55", Error, opam.Pos{}, "Non-normalised OS or arch string being tested%s", detail(badOS))
	}
	if !l.opam21() && (!hasDescr || syn == "") {
		l.add("opam-57", Error, l.itemPos("synopsis"), "Synopsis must not be empty")
	}
	if _, ok := f.Field("setenv"); ok && l.opam21() && !l.hasFlag("compiler") {
		l.add("opam-56", Warning, l.itemPos("setenv"), "It is discouraged for non-compiler packages to use 'setenv:'")
	}
	fvars := filterVariables(filters)
	test, doc := contains(fvars, "test"), contains(fvars, "doc")
	if test || doc {
		var msg string
		switch {
		case test && doc:
			msg = "Found `test` and `doc` variables, predefined ones are `with-test` and `with-doc`"
		case test:
			msg = "Found `test` variable, predefined one is `with-test`"
		default:
			msg = "Found `doc` variable, predefined one is `with-doc`"
		}
		l.add("opam-58", Warning, opam.Pos{}, "%s", msg)
	}
	urlVCS := url != nil && isVCS(url.Src, false)
	if l.opam21() && url != nil && !urlVCS {
		// opam 2.1 takes any URL without a known archive extension for version control.
		urlVCS = !archiveExtension(url.Src)
	}
	if l.opam21() && l.ctx.CheckUpstream && url != nil && len(url.Checksums)+len(url.BadChecksums) == 0 {
		// opam 2.1 asks for a checksum on any url, version control and conf packages too.
		l.add("opam-59", Warning, url.Pos, "url doesn't contain a checksum")
	} else if !l.opam21() && l.ctx.CheckUpstream && url != nil && !urlVCS && !l.hasFlag("conf") && len(url.Checksums)+len(url.BadChecksums) == 0 {
		l.add("opam-59", Warning, url.Pos, "url doesn't contain a checksum")
	}
	if contains(commandVariables(runTest), "with-test") {
		l.add("opam-61", Warning, l.itemPos("run-test"), "`with-test` variable in `run-test` is out of scope, it will be ignored")
	}
	var relative []string
	for _, u := range urls {
		if p, ok := localPath(u); ok && (!strings.HasPrefix(p, "/") || strings.Contains(p, "..")) {
			relative = append(relative, p)
		}
	}
	if len(relative) > 0 {
		l.add("opam-65", Error, l.itemPos("url"), "URLs must be absolute%s", detail(relative))
	}
	var notBool []string
	for _, fm := range []opam.Formula[opam.Dependency]{fm.depends, fm.depopts, fm.conflicts} {
		for _, d := range fm.Atoms() {
			var strs []string
			for _, c := range d.Cond.Atoms() {
				if c.Op == opam.OpNone {
					strs = append(strs, nonBoolStrings(&c.Filter, false)...)
				}
			}
			if len(strs) > 0 {
				notBool = append(notBool, fmt.Sprintf("%q in '%s'", strs, d))
			}
		}
	}
	if len(notBool) > 0 {
		l.add("opam-66", Warning, l.itemPos("depends"), "String that can't be resolved to bool in filtered package formula%s", detail(notBool))
	}
	if urlVCS && len(url.Checksums) > 0 {
		l.add("opam-67", Error, url.Pos, "Checksum specified with a non archive url")
	}
	var badLicenses []string
	for _, lic := range f.License() {
		if (l.opam21() && !validLicense21(lic)) || (!l.opam21() && !ValidLicense(lic)) {
			badLicenses = append(badLicenses, lic)
		}
	}
	if len(badLicenses) > 0 {
		l.add("opam-62", Warning, l.itemPos("license"), "License doesn't adhere to the SPDX standard, see https://spdx.org/licenses/%s", detail(badLicenses))
	}
	if len(f.License()) == 0 && !l.opam21() {
		l.add("opam-68", Warning, opam.Pos{}, "Missing field 'license'")
	}
}

func (l *linter) opam21() bool { return l.ctx.Opam == "2.1" }

// flags returns the flags field, empty when it is malformed (opam then ignores it).
func (l *linter) flags() []string {
	v, ok := l.f.Field("flags")
	if !ok {
		return nil
	}
	for _, e := range v.Elems() {
		if e.Kind != opam.KIdent {
			return nil
		}
	}
	return l.f.Flags()
}

func (l *linter) hasFlag(flag string) bool { return contains(l.flags(), flag) }

// archiveExtension reports whether a URL's path ends with an archive extension opam
// 2.1 recognises.
func archiveExtension(u string) bool {
	u, _, _ = strings.Cut(u, "#")
	for _, ext := range []string{".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.lzma", ".tlz"} {
		if strings.HasSuffix(u, ext) {
			return true
		}
	}
	return false
}

func unwrapOpamError(err error) (*opam.Error, bool) {
	for err != nil {
		if e, ok := err.(*opam.Error); ok {
			return e, true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return nil, false
		}
		err = u.Unwrap()
	}
	return nil, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// synopsis returns the synopsis field (trimmed) and whether the file has a
// description at all (a synopsis or a description field).
func (l *linter) synopsis() (string, bool) {
	syn, okS := l.f.Field("synopsis")
	_, okD := l.f.Field("description")
	if okS && syn.Kind == opam.KString {
		return strings.TrimSpace(syn.S), true
	}
	return "", okS || okD
}

// validSynopsis: starts with neither a blank nor a lowercase letter, ends with
// neither a blank nor a dot, at least two characters.
func validSynopsis(s string) bool {
	if len(s) < 2 {
		return false
	}
	first, last := s[0], s[len(s)-1]
	if first == ' ' || first == '\t' || (first >= 'a' && first <= 'z') {
		return false
	}
	return last != ' ' && last != '\t' && last != '.'
}

// isVCS reports whether a URL names a version-control backend: by its scheme, or
// (suffix true, as opam reads dev-repo) by a .git suffix.
func isVCS(u string, suffix bool) bool {
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		for _, vcs := range []string{"git", "hg", "darcs"} {
			if scheme == vcs || strings.HasPrefix(scheme, vcs+"+") {
				return true
			}
		}
	}
	return suffix && looksVCS(u)
}

func looksVCS(u string) bool {
	u, _, _ = strings.Cut(u, "#")
	u = strings.TrimSuffix(u, "/")
	return strings.HasSuffix(u, ".git") || strings.HasSuffix(u, ".hg")
}

// localPath returns the path of a file or local URL.
func localPath(u string) (string, bool) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "", false
	}
	if i := strings.LastIndexByte(scheme, '+'); i >= 0 {
		scheme = scheme[i+1:]
	}
	switch scheme {
	case "file", "path", "local", "rsync":
		rest, _, _ = strings.Cut(rest, "#")
		return rest, true
	}
	return "", false
}

func conflictsOrsOnly(f opam.Formula[opam.Dependency]) bool {
	switch f.Kind {
	case opam.FAtom:
		return condOrsOnly(f.Atom.Cond)
	case opam.FOr:
		for _, g := range f.Sub {
			if !conflictsOrsOnly(g) {
				return false
			}
		}
		return true
	case opam.FAnd:
		return false
	}
	return true
}

func condOrsOnly(f opam.Formula[opam.Cond]) bool {
	switch f.Kind {
	case opam.FOr:
		for _, g := range f.Sub {
			if !condOrsOnly(g) {
				return false
			}
		}
	case opam.FAnd:
		// A conjunction with filters is allowed around one constraint part.
		rest := 0
		for _, g := range f.Sub {
			if g.Kind == opam.FAtom && g.Atom.Op == opam.OpNone {
				continue
			}
			rest++
			if !condOrsOnly(g) {
				return false
			}
		}
		return rest <= 1
	}
	return true
}

func postMisuse(fm formulas) bool {
	for _, fl := range fm.depoptsF {
		if contains(fl.Variables(), "post") {
			return true
		}
	}
	for _, d := range fm.depends.Atoms() {
		var vars []string
		for _, c := range d.Cond.Atoms() {
			if c.Op == opam.OpNone {
				vars = append(vars, c.Filter.Variables()...)
			}
		}
		if contains(vars, "build") && contains(vars, "post") {
			return true
		}
	}
	return false
}

// negatesBuildOrPost reports whether, once negations are pushed down, `build` or
// `post` appears negated.
func negatesBuildOrPost(f *opam.Filter, neg bool) bool {
	switch f.Kind {
	case opam.FilterIdent:
		return neg && (f.S == "build" || f.S == "post")
	case opam.FilterNot:
		return negatesBuildOrPost(&f.Sub[0], !neg)
	case opam.FilterAnd, opam.FilterOr:
		return negatesBuildOrPost(&f.Sub[0], neg) || negatesBuildOrPost(&f.Sub[1], neg)
	}
	return false
}

func filterStrings(f *opam.Filter) []string {
	var out []string
	if f.Kind == opam.FilterString {
		out = append(out, f.S)
	}
	for i := range f.Sub {
		out = append(out, filterStrings(&f.Sub[i])...)
	}
	return out
}

// unclosedExpansions lists the "%{..." that have no closing "}%".
func unclosedExpansions(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "%{")
		if i < 0 {
			return out
		}
		rest := s[i+2:]
		j := strings.Index(rest, "}%")
		k := strings.Index(rest, "%{")
		if j < 0 || (k >= 0 && k < j) {
			end := len(rest)
			if k >= 0 {
				end = k
			}
			out = append(out, "%{"+rest[:end])
			if j < 0 && k < 0 {
				return out
			}
		}
		if j >= 0 && (k < 0 || j < k) {
			s = rest[j+2:]
		} else {
			s = rest[k:]
		}
	}
}

func normaliseOS(s string) string {
	switch strings.ToLower(s) {
	case "darwin", "osx":
		return "macos"
	}
	return strings.ToLower(s)
}

func normaliseArch(s string) string {
	switch strings.ToLower(s) {
	case "x86", "i386", "i486", "i586", "i686":
		return "x86_32"
	case "x86_64", "amd64":
		return "x86_64"
	case "powerpc", "ppc", "ppcle":
		return "ppc32"
	case "ppc64", "ppc64le":
		return "ppc64"
	case "aarch64_be", "aarch64":
		return "arm64"
	case "armv8b", "armv8l":
		return "arm32"
	}
	for _, p := range []string{"armv5", "armv6", "earmv6", "armv7", "earmv7"} {
		if strings.HasPrefix(strings.ToLower(s), p) {
			return "arm32"
		}
	}
	return strings.ToLower(s)
}

func nonNormalised(f *opam.Filter) []string {
	var out []string
	if f.Kind == opam.FilterOp {
		a, b := &f.Sub[0], &f.Sub[1]
		if b.Kind == opam.FilterIdent {
			a, b = b, a
		}
		if a.Kind == opam.FilterIdent && b.Kind == opam.FilterString {
			var norm string
			switch a.S {
			case "os":
				norm = normaliseOS(b.S)
			case "arch":
				norm = normaliseArch(b.S)
			default:
				norm = b.S
			}
			if norm != b.S {
				out = append(out, fmt.Sprintf("%s (use %s instead)", b.S, norm))
			}
		}
	}
	for i := range f.Sub {
		out = append(out, nonNormalised(&f.Sub[i])...)
	}
	return out
}

// nonBoolStrings lists strings in a filter that cannot be bools: outside a
// comparison, anything but "true", "false" or a single interpolation.
func nonBoolStrings(f *opam.Filter, inOp bool) []string {
	switch f.Kind {
	case opam.FilterString:
		if inOp || maybeBool(f.S) {
			return nil
		}
		return []string{f.S}
	case opam.FilterOp:
		return append(nonBoolStrings(&f.Sub[0], true), nonBoolStrings(&f.Sub[1], true)...)
	case opam.FilterAnd, opam.FilterOr:
		return append(nonBoolStrings(&f.Sub[0], false), nonBoolStrings(&f.Sub[1], false)...)
	case opam.FilterNot, opam.FilterDefined:
		return nonBoolStrings(&f.Sub[0], false)
	}
	return nil
}

func maybeBool(s string) bool {
	if s == "true" || s == "false" || s == "%%" {
		return true
	}
	if !strings.HasPrefix(s, "%{") {
		return false
	}
	body := strings.TrimSuffix(s[2:], "}%")
	return !strings.Contains(body, "}%") && !strings.ContainsAny(body, "\n")
}
