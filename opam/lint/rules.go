package lint

// Rule describes one check.
type Rule struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	// Group is the set of checks the rule belongs to.
	Group   Checks `json:"-"`
	Summary string `json:"summary"`
}

// Rules is the catalogue of every rule, in id order within each group.
var Rules = []Rule{
	{"opam-0", Error, OpamLint, "the package directory has no opam file"},
	{"opam-1", Error, OpamLint, "the opam file does not parse"},
	{"opam-2", Error, OpamLint, "opam 2.1: the file does not parse, or its opam-version is missing or newer than 2.0"},
	{"opam-3", Error, OpamLint, "unknown field or section, or a field of the wrong type"},
	{"opam-4", Warning, OpamLint, "name or version field differs from the directory"},
	{"opam-20", Warning, OpamLint, "opam-version names a patch version"},
	{"opam-21", Error, OpamLint, "opam-version is not 2.0"},
	{"opam-22", Error, OpamLint, "fields present but empty"},
	{"opam-23", Error, OpamLint, "missing maintainer"},
	{"opam-24", Error, OpamLint, "maintainer is the old default"},
	{"opam-25", Warning, OpamLint, "missing authors"},
	{"opam-26", Warning, OpamLint, "remove without install"},
	{"opam-28", Error, OpamLint, "unknown package flags"},
	{"opam-29", Error, OpamLint, "dependencies mention package variables"},
	{"opam-31", Error, OpamLint, "depends and depopts name the same packages"},
	{"opam-32", Error, OpamLint, "ocaml-version field or variable"},
	{"opam-33", Error, OpamLint, "os field"},
	{"opam-34", Error, OpamLint, "available uses package variables"},
	{"opam-35", Warning, OpamLint, "missing homepage"},
	{"opam-36", Warning, OpamLint, "missing bug-reports"},
	{"opam-37", Warning, OpamLint, "missing dev-repo while url is set"},
	{"opam-39", Error, OpamLint, "command \"make\" called directly instead of the make variable"},
	{"opam-41", Warning, OpamLint, "packages used in variables without a dependency"},
	{"opam-42", Error, OpamLint, "dev-repo does not use version control"},
	{"opam-43", Error, OpamLint, "conjunction in conflicts"},
	{"opam-44", Warning, OpamLint, "plugin flag on a package not named opam-*"},
	{"opam-45", Error, OpamLint, "unclosed %{ interpolation"},
	{"opam-46", Error, OpamLint, "conf package with sources, install or remove"},
	{"opam-47", Warning, OpamLint, "synopsis does not start with a capital or ends with a dot"},
	{"opam-48", Warning, OpamLint, "build-test or build-doc fields"},
	{"opam-49", Warning, OpamLint, "URL looks like version control but is not"},
	{"opam-50", Warning, OpamLint, "post flag with build or optional dependencies"},
	{"opam-51", Error, OpamLint, "negated build or post flag"},
	{"opam-52", Error, OpamLint, "light-uninstall flag without remove"},
	{"opam-53", Error, OpamLint, "extra-files do not match files/"},
	{"opam-54", Warning, OpamLint, "depexts with spaces or empty names"},
	{"opam-55", Error, OpamLint, "non-normalised os or arch value"},
	{"opam-56", Warning, OpamLint, "setenv in a non-compiler package (opam 2.1 only)"},
	{"opam-57", Error, OpamLint, "empty synopsis"},
	{"opam-58", Warning, OpamLint, "test or doc variable instead of with-test or with-doc"},
	{"opam-59", Warning, OpamLint, "url without checksum (upstream checks)"},
	{"opam-61", Warning, OpamLint, "with-test in run-test"},
	{"opam-62", Warning, OpamLint, "license is not an SPDX expression"},
	{"opam-65", Error, OpamLint, "relative local URL"},
	{"opam-66", Warning, OpamLint, "string in a dependency filter that cannot be a bool"},
	{"opam-67", Error, OpamLint, "checksum on a version-control url"},
	{"opam-68", Warning, OpamLint, "missing license (not in opam 2.1)"},
	{"repo-unnecessary-field", Warning, Publication, "name or version field repeats the directory"},
	{"repo-name-mismatch", Error, Publication, "name field differs from the directory"},
	{"repo-version-mismatch", Error, Publication, "version field differs from the directory"},
	{"repo-dune-subst", Warning, Publication, "dune subst outside {dev}"},
	{"repo-weak-checksum", Error, Publication, "url, extra-source or extra-files without sha256/sha512"},
	{"repo-forbidden-perm", Error, Publication, "opam file not mode 644 (or 664)"},
	{"repo-unexpected-file", Error, Publication, "file other than opam and files/ in the package directory"},
	{"repo-maintainer-contact", Error, Publication, "neither bug-reports nor a maintainer email"},
	{"repo-default-tags", Warning, Publication, "template tags left in place"},
	{"repo-pin-depends", Error, Publication, "pin-depends present"},
	{"repo-extra-files", Error, Publication, "extra-files present"},
	{"repo-conf-package", Error, Publication, "conf- prefix, conf flag and depexts not all together"},
	{"repo-prefix-conflict-class", Error, Publication, "restricted prefix without its conflict class, or the reverse"},
	{"repo-dune-build", Warning, Publication, "dune as a {build} dependency"},
	{"repo-name-collision", Warning, Publication, "new name similar to an existing one (case, - and _)"},
	{"repo-restricted-prefix", Warning, Publication, "new name with a prefix reserved for compiler and platform packages"},
	{"repo-version-twin", Error, Publication, "another version of the package is equal to this one as opam compares versions"},
	{"repo-missing-upper-bound", Error, Archive, "archived package dependency without upper bound"},
	{"repo-archive-reason", Error, Archive, "x-reason-for-archiving missing or invalid"},
	{"repo-archive-commit", Error, Archive, "x-opam-repository-commit-hash-at-time-of-archiving missing"},
}

// RuleByID finds a rule of the catalogue.
func RuleByID(id string) (Rule, bool) {
	for _, r := range Rules {
		if r.ID == id {
			return r, true
		}
	}
	return Rule{}, false
}
