// Package baseimages is the base-images service: it builds the matrix of opam and
// OCaml images (distribution × compiler × architecture) from a configuration, exports
// them as reproducible OCI images, publishes them to a registry under the reference's
// tags with multi-arch indexes, and keeps an index of what is published.
//
// It is not services/internal/baseimages, which makes the Debian root filesystems
// (in the builder's local image store) that these images, and other services' builds,
// start from; this package calls those "root filesystems" to keep the two apart.
package baseimages

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the service's configuration file (see docs/base-images.md).
type Config struct {
	// Registry is where images are published.
	Registry RegistryConfig `yaml:"registry"`
	// OpamRepository is the opam repository copied into the opam images.
	OpamRepository OpamRepoConfig `yaml:"opam-repository"`
	// Distros are the distributions built, in the order of their families' preference.
	Distros []DistroConfig `yaml:"distros"`
	// OCaml lists the compilers, as "X.Y" or "distro" (each distribution's own).
	OCaml []string `yaml:"ocaml"`
	// Opam lists opam versions, as "X.Y" or "distro" (each distribution's own).
	Opam []string `yaml:"opam"`
	// Arches are Debian architecture names (amd64, arm64, armhf, ppc64el).
	Arches []string `yaml:"arches"`
	// Retired lists compilers ("X.Y") no longer built: their tags stay, deprecated.
	Retired []string `yaml:"retired-ocaml"`
	// Refresh is how often the inputs are read again (default a week).
	Refresh Duration `yaml:"refresh"`
	// Latest names the distribution family the "latest" tag follows (default the first).
	Latest string `yaml:"latest"`
	// Packages are Debian packages added to every compiler image (e.g. ocaml-dune,
	// ocaml-findlib), besides the compiler.
	Packages []string `yaml:"packages"`
}

// RegistryConfig says where and how to publish.
type RegistryConfig struct {
	// Repository is the public name, e.g. registry.example.org/ocaml/opam.
	Repository string `yaml:"repository"`
	// Staging takes the per-architecture images (default Repository + "-staging").
	Staging string `yaml:"staging"`
	// CredentialsFile holds the registry's credentials, one line USERNAME:PASSWORD
	// (anonymous when empty).
	CredentialsFile string `yaml:"credentials-file"`
	// Insecure talks plain HTTP to the registry.
	Insecure bool `yaml:"insecure"`
	// SigningKey is a cosign private key file signing images and attestations.
	SigningKey string `yaml:"signing-key"`
}

// OpamRepoConfig is the opam repository and the branch followed.
type OpamRepoConfig struct {
	Git    string `yaml:"git"`
	Branch string `yaml:"branch"`
}

// DistroConfig is one distribution of the matrix.
type DistroConfig struct {
	// Name is distro-version as in tags, e.g. debian-12.
	Name string `yaml:"name"`
	// Mirror is the Debian mirror (default deb.debian.org).
	Mirror string `yaml:"mirror"`
	// Snapshot is the date of the mirror's snapshot the image is made from; changing
	// it remakes the distribution's images. Empty: the mirror as it is.
	Snapshot string `yaml:"snapshot"`
	// Retired distributions are no longer built; their tags stay, deprecated.
	Retired bool `yaml:"retired"`
	// Packages are Debian packages added to this distribution's compiler images,
	// besides the configuration's packages.
	Packages []string `yaml:"packages"`
}

// Duration is a time.Duration written as Go writes one ("168h").
type Duration time.Duration

// UnmarshalYAML reads "168h", "30m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 168h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Distro is what kiln knows of a distribution it can build offline.
type Distro struct {
	Name    string `json:"name"`    // debian-12
	Family  string `json:"family"`  // debian
	Version string `json:"version"` // 12
	Suite   string `json:"suite"`   // bookworm
	OCaml   string `json:"ocaml"`   // full version of the distribution's compiler, 4.13.1
	Opam    string `json:"opam"`    // version of its opam package, 2.1.2
}

// Distros are the distributions built from the Debian mirror with mmdebstrap.
var Distros = []Distro{
	{Name: "debian-12", Family: "debian", Version: "12", Suite: "bookworm", OCaml: "4.13.1", Opam: "2.1.2"},
	{Name: "debian-13", Family: "debian", Version: "13", Suite: "trixie", OCaml: "5.3.0", Opam: "2.3.0"},
}

// Arch is an architecture the matrix can build, and the fleet pool building it.
type Arch struct {
	Name     string `json:"name"`              // Debian's name
	Pool     string `json:"pool"`              // fleet pool
	OCIArch  string `json:"oci_arch"`          // OCI platform architecture
	Variant  string `json:"variant,omitempty"` // OCI platform variant
	OptIn    bool   `json:"opt_in,omitempty"`  // emulated and slow here: only built when configured
	OpamArch string `json:"opam_arch"`         // opam's arch variable
}

// Arches are the architectures the OCaml infrastructure builds for.
var Arches = []Arch{
	{Name: "amd64", Pool: "linux-x86_64", OCIArch: "amd64", OpamArch: "x86_64"},
	{Name: "arm64", Pool: "linux-arm64", OCIArch: "arm64", Variant: "v8", OpamArch: "arm64"},
	{Name: "armhf", Pool: "linux-arm32", OCIArch: "arm", Variant: "v7", OptIn: true, OpamArch: "arm32"},
	{Name: "ppc64el", Pool: "linux-ppc64le", OCIArch: "ppc64le", OptIn: true, OpamArch: "ppc64"},
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("base-images config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig reads and checks a configuration; errors name the field at fault.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("base-images config: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Check fills defaults and checks the configuration.
func (c *Config) Check() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Distros) == 0 {
		c.Distros = []DistroConfig{{Name: "debian-12"}, {Name: "debian-13"}}
	}
	if len(c.OCaml) == 0 {
		c.OCaml = []string{"distro"}
	}
	if len(c.Opam) == 0 {
		c.Opam = []string{"distro"}
	}
	if len(c.Arches) == 0 {
		c.Arches = []string{"amd64", "arm64"}
	}
	if c.Refresh == 0 {
		c.Refresh = Duration(7 * 24 * time.Hour)
	}
	if c.Refresh < 0 {
		bad("refresh", "%s is negative", time.Duration(c.Refresh))
	}
	if c.OpamRepository.Branch == "" {
		c.OpamRepository.Branch = "master"
	}
	if c.Registry.Repository != "" && c.Registry.Staging == "" {
		c.Registry.Staging = c.Registry.Repository + "-staging"
	}
	if c.Registry.Repository == "" && (c.Registry.CredentialsFile != "" || c.Registry.SigningKey != "") {
		bad("registry.repository", "credentials or a signing key given without a repository")
	}
	seen := map[string]bool{}
	for i, d := range c.Distros {
		field := fmt.Sprintf("distros[%d].name", i)
		if _, ok := LookupDistro(d.Name); !ok {
			bad(field, "unknown distribution %q (known: %s)", d.Name, strings.Join(distroNames(), ", "))
		}
		if seen[d.Name] {
			bad(field, "%q given twice", d.Name)
		}
		seen[d.Name] = true
		if d.Snapshot != "" {
			if _, err := time.Parse("2006-01-02", d.Snapshot); err != nil {
				bad(fmt.Sprintf("distros[%d].snapshot", i), "%q is not a date (YYYY-MM-DD)", d.Snapshot)
			}
		}
	}
	checkPackages("packages", c.Packages, bad)
	for i, d := range c.Distros {
		checkPackages(fmt.Sprintf("distros[%d].packages", i), d.Packages, bad)
	}
	for i, a := range c.Arches {
		if _, ok := LookupArch(a); !ok {
			bad(fmt.Sprintf("arches[%d]", i), "unknown architecture %q (known: %s)", a, strings.Join(archNames(), ", "))
		}
	}
	for i, v := range c.OCaml {
		if v == "distro" {
			continue
		}
		if !isMajorMinor(v) {
			bad(fmt.Sprintf("ocaml[%d]", i), "%q is neither X.Y nor distro", v)
			continue
		}
		if len(c.distrosWith(v, func(d Distro) string { return d.OCaml })) == 0 {
			bad(fmt.Sprintf("ocaml[%d]", i), "OCaml %s is packaged by none of the distributions (%s); compilers built by opam need their source archives, not supported offline", v, c.packaged(func(d Distro) string { return d.OCaml }))
		}
	}
	for i, v := range c.Opam {
		if v == "distro" {
			continue
		}
		if !isMajorMinor(v) {
			bad(fmt.Sprintf("opam[%d]", i), "%q is neither X.Y nor distro", v)
			continue
		}
		if len(c.distrosWith(v, func(d Distro) string { return d.Opam })) == 0 {
			bad(fmt.Sprintf("opam[%d]", i), "opam %s is packaged by none of the distributions (%s)", v, c.packaged(func(d Distro) string { return d.Opam }))
		}
	}
	for i, v := range c.Retired {
		if !isMajorMinor(v) {
			bad(fmt.Sprintf("retired-ocaml[%d]", i), "%q is not X.Y", v)
		}
	}
	if c.Latest == "" && len(c.Distros) > 0 {
		if d, ok := LookupDistro(c.Distros[0].Name); ok {
			c.Latest = d.Family
		}
	}
	return errors.Join(errs...)
}

// debianPackageName is what Debian's policy allows as a package name.
var debianPackageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

func checkPackages(field string, pkgs []string, bad func(field, format string, args ...any)) {
	for i, p := range pkgs {
		if !debianPackageName.MatchString(p) {
			bad(fmt.Sprintf("%s[%d]", field, i), "%q is not a Debian package name", p)
		}
	}
}

// compilerPackages are the packages the configuration adds to the compiler images of
// distribution dc, sorted, each once, without those every compiler image has.
func (c *Config) compilerPackages(dc DistroConfig) []string {
	var out []string
	for _, p := range append(slices.Clone(c.Packages), dc.Packages...) {
		if !slices.Contains(CompilerPackages, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// LookupDistro finds a distribution kiln can build.
func LookupDistro(name string) (Distro, bool) {
	for _, d := range Distros {
		if d.Name == name {
			return d, true
		}
	}
	return Distro{}, false
}

// LookupArch finds an architecture by its Debian name.
func LookupArch(name string) (Arch, bool) {
	for _, a := range Arches {
		if a.Name == name {
			return a, true
		}
	}
	return Arch{}, false
}

func distroNames() []string {
	var out []string
	for _, d := range Distros {
		out = append(out, d.Name)
	}
	return out
}

func archNames() []string {
	var out []string
	for _, a := range Arches {
		out = append(out, a.Name)
	}
	return out
}

func isMajorMinor(v string) bool {
	a, b, ok := strings.Cut(v, ".")
	return ok && a != "" && b != "" && strings.Trim(a+b, "0123456789") == ""
}

// majorMinor is X.Y of a version X.Y.Z.
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// distrosWith are the configured, active distributions whose field is version X.Y.
func (c *Config) distrosWith(xy string, field func(Distro) string) []Distro {
	var out []Distro
	for _, dc := range c.Distros {
		if d, ok := LookupDistro(dc.Name); ok && !dc.Retired && majorMinor(field(d)) == xy {
			out = append(out, d)
		}
	}
	return out
}

// packaged says which version each configured distribution packages.
func (c *Config) packaged(field func(Distro) string) string {
	var out []string
	for _, dc := range c.Distros {
		if d, ok := LookupDistro(dc.Name); ok {
			out = append(out, d.Name+" has "+majorMinor(field(d)))
		}
	}
	sort.Strings(out)
	return strings.Join(slices.Compact(out), ", ")
}
