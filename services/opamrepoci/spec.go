package opamrepoci

import (
	"fmt"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// OpamLayer makes the opam layer of a build on a platform: opam initialised over an
// opam repository in the build's context, and a switch with the platform's compiler.
type OpamLayer interface {
	Ops(p matrix.Platform) []spec.Op
	// Sources says how the install steps get sources: network, they fetch some
	// themselves; cache, through opam's download cache shared between builds. With
	// neither, the layer holds every source and they run offline.
	Sources() (network, cache bool)
}

// RepoDir is where the merged repository tree sits in a build.
const RepoDir = "/src/opam-repository"

// initLayer is the opam layer of an image with opam and the system compiler: the
// tree copied in, `opam init` on it, and an ocaml-system switch (with the network:
// ocaml-system and ocaml-config fetch their extra sources).
type initLayer struct{}

func (initLayer) Ops(matrix.Platform) []spec.Op {
	return []spec.Op{
		spec.Env{Name: "OPAMROOTISOK", Value: "1"},
		spec.Workdir{Path: "/src"},
		spec.Copy{Src: []string{"."}, Dst: RepoDir + "/", Exclude: []string{".git"}},
		spec.Run{Network: []string{"host"}, Shell: "opam init --bare -n --disable-sandboxing default " + RepoDir + " && opam switch create ci ocaml-system && opam config report"},
	}
}

func (initLayer) Sources() (network, cache bool) { return true, true }

// Specs writes the builder specs of jobs.
type Specs struct {
	Config *Config
	// Layer is the opam layer; nil is `opam init` over the merged tree (the build's
	// context) and an ocaml-system switch.
	Layer OpamLayer
}

// downloadCache is the cache of source archives shared by builds.
var downloadCache = spec.Cache{ID: "opam-archives", Target: "/root/.opam/download-cache"}

// lagCriteria are opam's solver criteria for the oldest versions (lower bounds).
const lagCriteria = "+removed,+count[version-lag,solution]"

// Spec returns the builder spec of a job, as opam-repository CI builds it: opam over
// the merged repository, the package pinned to its version and reinstalled; tests
// with --with-test; lower bounds with opam's version-lag criteria; a reverse
// dependency installed, then reinstalled with its tests.
func (s *Specs) Spec(j Job) (*spec.Spec, error) {
	p, ok := s.Config.Platform(j.Platform)
	if !ok {
		return nil, fmt.Errorf("job %s: unknown platform %q", j.ID(), j.Platform)
	}
	layer := s.Layer
	if layer == nil {
		layer = initLayer{}
	}
	sp := &spec.Spec{From: p.Image}
	add := func(ops ...spec.Op) { sp.Ops = append(sp.Ops, ops...) }
	add(spec.Comment{Text: j.ID()})
	for _, kv := range [][2]string{{"CI", "true"}, {"OPAM_REPO_CI", "true"}, {"OPAMYES", "1"},
		{"OPAMDOWNLOADJOBS", "1"}, {"OPAMERRLOGLEN", "0"}, {"OPAMPRECISETRACKING", "1"}} {
		add(spec.Env{Name: kv[0], Value: kv[1]})
	}
	if bin := s.Config.opam[p.Name]; bin != "" {
		add(spec.Run{Shell: "ln -sf " + shellQuote(bin) + " /usr/local/bin/opam"})
	}
	add(layer.Ops(p)...)
	pkg := j.Package.String()
	add(spec.Run{Shell: fmt.Sprintf("opam pin add -k version -yn %s %s", shellQuote(pkg), shellQuote(string(j.Package.Version)))})
	network, cache := layer.Sources()
	in := func(pkg opam.Package, tests bool) []spec.Op { return install(pkg, p.Distro, tests, network, cache) }
	add(in(j.Package, false)...)
	switch j.Kind {
	case Build:
	case Tests:
		add(in(j.Package, true)...)
	case LowerBounds:
		for _, v := range []string{"OPAMCRITERIA", "OPAMFIXUPCRITERIA", "OPAMUPGRADECRITERIA"} {
			add(spec.Env{Name: v, Value: lagCriteria})
		}
		add(in(j.Package, false)...)
	case Revdep:
		if j.Revdep.Name == "" {
			return nil, fmt.Errorf("job %s: a revdeps job without its reverse dependency", j.ID())
		}
		add(in(j.Revdep, false)...)
		add(in(j.Revdep, true)...)
	default:
		return nil, fmt.Errorf("job %s: unknown kind %q", j.ID(), j.Kind)
	}
	return sp, sp.Validate()
}

// install is the steps that reinstall pkg (with its tests when tests is set); with
// network, they fetch sources, through the shared download cache when cache is set. A build failure names the other packages
// that failed, and says when a failed package accepts failures on the distribution
// (x-ci-accept-failures): the lines the status's summary reads.
func install(pkg opam.Package, distro string, tests, network, cache bool) []spec.Op {
	name := shellQuote(pkg.String())
	flags := ""
	if tests {
		flags += " --with-test --verbose"
	}
	switch pkg.Name {
	case "ocaml-variants", "ocaml-base-compiler", "ocaml-compiler":
		flags += " --update-invariant"
	}
	script := strings.Join([]string{
		"opam reinstall" + flags + " " + name,
		`status=$?`,
		`[ "$status" = 31 ] || exit "$status"`,
		`export OPAMCLI=2.0`,
		`deps=""`,
		`for p in $(ls "$(opam var prefix)/.opam-switch/build"); do`,
		`  if opam show -f x-ci-accept-failures: "$p" | grep -qF ` + shellQuote(`"`+distro+`"`) + `; then`,
		`    echo "A package failed and has been disabled for CI using the 'x-ci-accept-failures' field."`,
		`  fi`,
		`  [ "$p" = ` + name + ` ] || deps="$deps $p"`,
		`done`,
		`[ -z "$deps" ] || echo "opam-repo-ci detected dependencies failing:$deps"`,
		`exit 1`,
	}, "\n")
	if !network {
		return []spec.Op{spec.Run{Shell: script}}
	}
	if !tests {
		r := spec.Run{Network: []string{"host"}, Shell: script}
		if cache {
			r.Cache = []spec.Cache{downloadCache}
		}
		return []spec.Op{r}
	}
	// A first run with the network fetches what the tests need into the image (not
	// the shared cache, which another build may change meanwhile); the tests run
	// without the network.
	return []spec.Op{
		spec.Run{Network: []string{"host"}, Shell: "(opam reinstall --with-test " + name + ") || true"},
		spec.Run{Shell: script},
	}
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=/:~") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Source says where a pull request's commits come from, for the reproduction
// commands.
type Source struct {
	// CloneURL is the repository to clone, e.g. https://github.com/ocaml/opam-repository.git.
	CloneURL string `json:"clone_url"`
	// HeadRef is what to fetch for the head: refs/pull/N/head, or a branch.
	HeadRef string `json:"head_ref"`
	Head    string `json:"head"`
	Base    string `json:"base"` // the base commit the head is merged into
}

// Repro returns the shell commands that reproduce a job locally: check out the pull
// request merged into its base, write the job's spec and build it with kiln (or
// Docker). Every job's log starts with them.
func (s *Specs) Repro(src Source, j Job) (string, error) {
	sp, err := s.Spec(j)
	if err != nil {
		return "", err
	}
	p, _ := s.Config.Platform(j.Platform)
	var b strings.Builder
	fmt.Fprintf(&b, "To reproduce %s locally:\n\n", j.ID())
	fmt.Fprintf(&b, "cd $(mktemp -d)\n")
	fmt.Fprintf(&b, "git clone %s opam-repository && cd opam-repository\n", shellQuote(src.CloneURL))
	fmt.Fprintf(&b, "git fetch origin %s && git checkout -q --detach %s\n", shellQuote(src.HeadRef), shellQuote(src.Head))
	fmt.Fprintf(&b, "git merge -q --no-edit %s\n", shellQuote(src.Base))
	if p.Debian != nil {
		fmt.Fprintf(&b, "kiln base debian --suite %s --arch %s --packages %s\n", p.Debian.Suite, p.Debian.Arch, strings.Join(p.Debian.Packages, ","))
	}
	fmt.Fprintf(&b, "cat > ../build.spec <<'END-OF-SPEC'\n%sEND-OF-SPEC\n", sp.String())
	fmt.Fprintf(&b, "kiln build -f ../build.spec --context .\n")
	fmt.Fprintf(&b, "# or with Docker: kiln build -f ../build.spec --print-dockerfile > ../Dockerfile && docker buildx build -f ../Dockerfile --allow network.host .\n")
	return b.String(), nil
}

// FleetClient names the fleet client of a pull request (forge, repository and
// number, e.g. "github", "ocaml/opam-repository", "1234"). The fleet shares each
// lane fairly between clients, so every pull request gets its share whatever the
// size of the others.
func FleetClient(forge, repo, pr string) string {
	clean := func(s string) string {
		if s == "" {
			return "_"
		}
		return strings.Map(func(c rune) rune {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
				return c
			}
			return '_'
		}, s)
	}
	name := strings.Join([]string{"opam-repo-ci", clean(forge), clean(repo), clean(pr)}, ".")
	if len(name) > 128 {
		name = strings.TrimRight(name[:128], ".")
	}
	return name
}

// Request is the fleet request of a job of the pull request whose fleet client is
// client (see FleetClient): its pool, spec, cache hint and lane. The caller sets the
// ticket and the source directory (a checkout of the merged tree).
func (s *Specs) Request(j Job, client string) (fleetjob.Request, error) {
	sp, err := s.Spec(j)
	if err != nil {
		return fleetjob.Request{}, err
	}
	p, _ := s.Config.Platform(j.Platform)
	hint := p.Name + "-" + j.Package.String()
	if j.Kind == Revdep {
		hint += "-" + j.Revdep.String()
	}
	return fleetjob.Request{Pool: p.Pool, Client: client, Spec: sp.String(), CacheHint: hint, Urgent: !j.Background}, nil
}
