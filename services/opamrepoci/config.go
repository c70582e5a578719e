// Package opamrepoci is CI for pull requests to an opam package repository
// (opam-repo-ci): it analyses a pull request merged into its base (what changed, what
// cannot be tested as it stands), lints the changed packages, plans the jobs of each
// changed package as a tree (compilers, distributions, architectures, opam versions;
// build, tests, lower bounds and reverse dependencies on each), writes their builder
// specs with the commands to reproduce them locally, and says which fleet client and
// lane each job takes so pull requests share the fleet fairly.
package opamrepoci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Group is a branch of the job tree under each package.
type Group string

// The groups, in the order of the tree.
const (
	Compilers     Group = "compilers"     // every supported OCaml on the main distribution
	Distributions Group = "distributions" // other distributions
	Architectures Group = "architectures" // other architectures
	OpamVersions  Group = "opam-versions" // other opam releases
)

// Groups lists the groups in tree order.
var Groups = []Group{Compilers, Distributions, Architectures, OpamVersions}

// Config is the job matrix: the platforms and, per group of the tree, the platforms
// jobs run on. It is read from a YAML file (see docs/opam-repo-ci.md).
type Config struct {
	// Platforms defines the platforms the groups name. An entry with only a name
	// naming a built-in platform (DefaultPlatforms) takes its definition.
	Platforms []PlatformConfig `yaml:"platforms" json:"platforms"`
	// Compilers, Distributions, Architectures and OpamVersions are the entries of each
	// group.
	Compilers     []Entry `yaml:"compilers" json:"compilers"`
	Distributions []Entry `yaml:"distributions" json:"distributions"`
	Architectures []Entry `yaml:"architectures" json:"architectures"`
	OpamVersions  []Entry `yaml:"opam-versions" json:"opam_versions"`
	// BackgroundRevdeps is the number of reverse-dependency jobs above which a pull
	// request's reverse dependencies go to the fleet's background lane (they run
	// after every pull request's own builds); 0 means 200.
	BackgroundRevdeps int `yaml:"background-revdeps" json:"background_revdeps"`

	platforms map[string]matrix.Platform
	opam      map[string]string // platform name → opam binary, when not the image's
}

// PlatformConfig is one platform of the configuration file.
type PlatformConfig struct {
	Name   string `yaml:"name" json:"name"`
	Distro string `yaml:"distro" json:"distro"`
	OCaml  string `yaml:"ocaml" json:"ocaml"`
	Arch   string `yaml:"arch" json:"arch"`
	Pool   string `yaml:"pool" json:"pool"`
	// Image is the base image; or Debian says how to make it from the Debian mirror.
	Image  string        `yaml:"image" json:"image,omitempty"`
	Debian *DebianConfig `yaml:"debian" json:"debian,omitempty"`
	// Vars are the opam variables of the image (`opam var`): os, arch,
	// os-distribution, opam-version, ocaml:version, ...
	Vars map[string]string `yaml:"vars" json:"vars"`
	// Compiler lists the packages of an opam switch on the image's compiler, the
	// first the one to create it with (e.g. ocaml-system.5.3.0, ocaml.5.3.0); needed
	// by jobs built over a prepared opam layer (LayerRequest).
	Compiler []string `yaml:"compiler" json:"compiler,omitempty"`
	// Opam, when set, is the opam binary jobs use instead of the image's `opam`
	// (for the opam-versions group), e.g. /usr/local/bin/opam-2.3.
	Opam string `yaml:"opam" json:"opam,omitempty"`
}

// DebianConfig says how to make a platform's image from the Debian mirror.
type DebianConfig struct {
	Suite    string   `yaml:"suite" json:"suite"`
	Packages []string `yaml:"packages" json:"packages"`
}

// Entry is one platform of a group.
type Entry struct {
	Platform string `yaml:"platform" json:"platform"`
	// Label names the entry in the tree: by default the OCaml version in the compilers
	// group and the platform's name elsewhere. It may not hold a comma.
	Label string `yaml:"label" json:"label,omitempty"`
	// LowerBounds and Revdeps add those jobs; by default set in the compilers group
	// only.
	LowerBounds *bool `yaml:"lower-bounds" json:"lower_bounds,omitempty"`
	Revdeps     *bool `yaml:"revdeps" json:"revdeps,omitempty"`
}

// DefaultPlatforms are the built-in platforms: Debian 12 with its OCaml 4.13 and
// opam 2.1 on amd64 and arm64, whose images the builder makes offline from the
// Debian mirror.
func DefaultPlatforms() []matrix.Platform { return matrix.Default() }

// Default is the configuration that works on one Debian machine: the compilers group
// has Debian 12 on amd64 (OCaml 4.13: build, tests, lower bounds, reverse
// dependencies), the architectures group Debian 12 on arm64 (build, tests).
func Default() *Config {
	c := &Config{
		Platforms:     []PlatformConfig{{Name: matrix.Debian("amd64").Name}, {Name: matrix.Debian("arm64").Name}},
		Compilers:     []Entry{{Platform: matrix.Debian("amd64").Name}},
		Architectures: []Entry{{Platform: matrix.Debian("arm64").Name, Label: "arm64"}},
	}
	if err := c.resolve(); err != nil {
		panic(err) // the default is constant and valid
	}
	return c
}

// Load reads a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("opam-repo-ci configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse reads a configuration from YAML; name is used in messages.
func Parse(name string, data []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := c.resolve(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// resolve checks the configuration and indexes its platforms.
func (c *Config) resolve() error {
	builtin := map[string]matrix.Platform{}
	for _, p := range DefaultPlatforms() {
		builtin[p.Name] = p
	}
	c.platforms = map[string]matrix.Platform{}
	c.opam = map[string]string{}
	for i, pc := range c.Platforms {
		if pc.Name == "" {
			return fmt.Errorf("platforms[%d]: no name", i)
		}
		if strings.ContainsAny(pc.Name, ", /") {
			return fmt.Errorf("platform %q: a name may not hold a comma, a space or a slash", pc.Name)
		}
		if _, dup := c.platforms[pc.Name]; dup {
			return fmt.Errorf("platform %q defined twice", pc.Name)
		}
		p, err := pc.platform(builtin)
		if err != nil {
			return fmt.Errorf("platform %q: %w", pc.Name, err)
		}
		c.platforms[pc.Name] = p
		if pc.Opam != "" {
			c.opam[pc.Name] = pc.Opam
		}
	}
	if len(c.Compilers) == 0 {
		return errors.New("compilers: at least one platform is needed")
	}
	for _, g := range Groups {
		labels := map[string]bool{}
		for i, e := range c.entries(g) {
			p, ok := c.platforms[e.Platform]
			if !ok {
				return fmt.Errorf("%s[%d]: unknown platform %q (defined: %s)", g, i, e.Platform, strings.Join(c.platformNames(), ", "))
			}
			l := c.label(g, e, p)
			if l == "" || strings.ContainsAny(l, ", /") {
				return fmt.Errorf("%s[%d]: label %q: want a non-empty label without a comma, a space or a slash", g, i, l)
			}
			if labels[l] {
				return fmt.Errorf("%s: label %q used twice", g, l)
			}
			labels[l] = true
		}
	}
	if c.BackgroundRevdeps < 0 {
		return fmt.Errorf("background-revdeps: %d is negative", c.BackgroundRevdeps)
	}
	return nil
}

func (pc PlatformConfig) platform(builtin map[string]matrix.Platform) (matrix.Platform, error) {
	if b, ok := builtin[pc.Name]; ok && pc.Distro == "" && pc.Image == "" && pc.Debian == nil && pc.Vars == nil && pc.Compiler == nil {
		return b, nil
	}
	p := matrix.Platform{Name: pc.Name, Distro: pc.Distro, OCaml: pc.OCaml, Arch: pc.Arch, Pool: pc.Pool, Image: pc.Image, Vars: pc.Vars, Compiler: pc.Compiler}
	if pc.Debian != nil {
		opts := image.DebianOptions{Suite: pc.Debian.Suite, Arch: pc.Arch, Packages: pc.Debian.Packages}
		name, err := opts.LocalName()
		if err != nil {
			return p, fmt.Errorf("debian: %w", err)
		}
		if p.Image != "" && p.Image != name {
			return p, fmt.Errorf("image %q and debian (making %q) disagree: give one", p.Image, name)
		}
		p.Image, p.Debian = name, &opts
	}
	for field, v := range map[string]string{"distro": p.Distro, "ocaml": p.OCaml, "arch": p.Arch, "pool": p.Pool, "image (or debian)": p.Image} {
		if v == "" {
			return p, fmt.Errorf("no %s", field)
		}
	}
	for _, v := range []string{"os", "arch", "os-distribution", "ocaml:version"} {
		if p.Vars[v] == "" {
			return p, fmt.Errorf("vars: no %s (the solver needs it)", v)
		}
	}
	return p, nil
}

func (c *Config) platformNames() []string {
	var out []string
	for n := range c.platforms {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (c *Config) entries(g Group) []Entry {
	switch g {
	case Compilers:
		return c.Compilers
	case Distributions:
		return c.Distributions
	case Architectures:
		return c.Architectures
	case OpamVersions:
		return c.OpamVersions
	}
	return nil
}

func (c *Config) label(g Group, e Entry, p matrix.Platform) string {
	if e.Label != "" {
		return e.Label
	}
	if g == Compilers {
		return p.OCaml
	}
	return p.Name
}

// Platform returns a platform of the configuration by name.
func (c *Config) Platform(name string) (matrix.Platform, bool) {
	p, ok := c.platforms[name]
	return p, ok
}

// Pools lists the fleet pools the configuration's platforms build on.
func (c *Config) Pools() []string {
	var ps []matrix.Platform
	for _, n := range c.platformNames() {
		ps = append(ps, c.platforms[n])
	}
	return matrix.Pools(ps)
}

func (c *Config) backgroundRevdeps() int {
	if c.BackgroundRevdeps == 0 {
		return 200
	}
	return c.BackgroundRevdeps
}

// target is one entry of a group, resolved: where jobs run and which ones.
type target struct {
	group       Group
	label       string
	platform    matrix.Platform
	lowerBounds bool
	revdeps     bool
}

// targets lists the entries of every group in tree order.
func (c *Config) targets() []target {
	var out []target
	for _, g := range Groups {
		for _, e := range c.entries(g) {
			p := c.platforms[e.Platform]
			t := target{group: g, label: c.label(g, e, p), platform: p, lowerBounds: g == Compilers, revdeps: g == Compilers}
			if e.LowerBounds != nil {
				t.lowerBounds = *e.LowerBounds
			}
			if e.Revdeps != nil {
				t.revdeps = *e.Revdeps
			}
			out = append(out, t)
		}
	}
	return out
}

// target finds the entry of group g labelled label.
func (c *Config) target(g Group, label string) (target, bool) {
	for _, t := range c.targets() {
		if t.group == g && t.label == label {
			return t, true
		}
	}
	return target{}, false
}
