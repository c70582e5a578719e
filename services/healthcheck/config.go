package healthcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Config is what the health check checks and how (a YAML file; see
// docs/health-check.md).
type Config struct {
	// Repository is the opam repository followed: a git URL or path, and its branch.
	Repository RepositoryConfig `yaml:"repository" json:"repository"`
	// Versions is "latest" (the newest version of each package) or "all".
	Versions string `yaml:"versions" json:"versions"`
	// WithTest runs each package's tests after it installs; LowerBounds installs it
	// again with its oldest dependencies.
	WithTest    bool `yaml:"with-test" json:"with_test"`
	LowerBounds bool `yaml:"lower-bounds" json:"lower_bounds"`
	// Platform is the platform builds run on: a built-in one by name
	// (debian-12-4.13_amd64) or one defined here, with its base image.
	Platform PlatformConfig `yaml:"platform" json:"platform"`
	Switches []Switch       `yaml:"switches" json:"switches"`
	// JobTimeout bounds one build (default 1h); Parallelism the builds of a run in
	// flight at once (default 200); Interval the time between two runs (0: only
	// runs asked for); Retention the finished baseline runs kept (default 10).
	JobTimeout  Duration `yaml:"job-timeout" json:"job_timeout"`
	Parallelism int      `yaml:"parallelism" json:"parallelism"`
	Interval    Duration `yaml:"interval" json:"interval"`
	Retention   int      `yaml:"retention" json:"retention"`
	// Retries is how many times a build failing on the infrastructure is tried again
	// before it is recorded as an internal failure (default 2).
	Retries int `yaml:"retries" json:"retries"`
	// Webhooks are told of each finished run.
	Webhooks []Webhook `yaml:"webhooks" json:"webhooks,omitempty"`
}

// RepositoryConfig is the opam repository followed.
type RepositoryConfig struct {
	URL    string `yaml:"url" json:"url"`
	Branch string `yaml:"branch" json:"branch"`
}

// PlatformConfig is the platform builds run on.
type PlatformConfig struct {
	Name string `yaml:"name" json:"name"`
	Pool string `yaml:"pool" json:"pool,omitempty"`
	// Image is the base image (with opam and rsync); by default the built-in
	// platform's, made from the Debian mirror.
	Image string `yaml:"image" json:"image,omitempty"`
	// Vars are the opam variables of the image, for the solver.
	Vars map[string]string `yaml:"vars" json:"vars,omitempty"`
}

// Webhook is a notification endpoint: a Slack-compatible incoming webhook ("slack")
// or a generic JSON one ("json"), its URL read from a file (it is a secret).
type Webhook struct {
	Name    string `yaml:"name" json:"name"`
	Kind    string `yaml:"kind" json:"kind"`
	URLFile string `yaml:"url_file" json:"url_file"`
}

// Duration is a time.Duration written as "90m" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML reads a duration such as "1h30m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (such as 90m or 2h): %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalText writes the duration as text (JSON).
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a duration as text (JSON).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// The defaults.
const (
	DefaultJobTimeout  = time.Hour
	DefaultParallelism = 200
	DefaultRetention   = 10
	DefaultRetries     = 2
)

// Load reads and checks a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("health-check configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse reads and checks a configuration; name says where it comes from in errors.
func Parse(name string, data []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("health-check configuration %s: %w", name, err)
	}
	if err := c.Check(); err != nil {
		return nil, fmt.Errorf("health-check configuration %s: %w", name, err)
	}
	return c, nil
}

var switchName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]*$`)

// Check fills the defaults and says what is wrong, every problem at once.
func (c *Config) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Repository.URL == "" {
		bad("repository.url: give the opam repository to follow (a git URL or path)")
	}
	if c.Repository.Branch == "" {
		c.Repository.Branch = "master"
	}
	switch c.Versions {
	case "":
		c.Versions = "latest"
	case "latest", "all":
	default:
		bad("versions: %q: want latest or all", c.Versions)
	}
	if c.Platform.Name == "" {
		c.Platform.Name = matrix.Debian("amd64").Name
	}
	if _, err := c.platform(); err != nil {
		bad("platform: %v", err)
	}
	if len(c.Switches) == 0 {
		bad("switches: give at least one (name, compiler)")
	}
	seen := map[string]bool{}
	for i := range c.Switches {
		if err := c.Switches[i].check(); err != nil {
			bad("switches[%d]: %v", i, err)
		}
		if n := c.Switches[i].Name; seen[n] {
			bad("switches[%d]: switch %q is defined twice", i, n)
		} else {
			seen[n] = true
		}
	}
	if c.JobTimeout < 0 || c.Parallelism < 0 || c.Interval < 0 || c.Retention < 0 || c.Retries < 0 {
		bad("job-timeout, parallelism, interval, retention and retries may not be negative")
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = Duration(DefaultJobTimeout)
	}
	if c.Parallelism == 0 {
		c.Parallelism = DefaultParallelism
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	for i, w := range c.Webhooks {
		if w.Name == "" || (w.Kind != "slack" && w.Kind != "json") || w.URLFile == "" {
			bad("webhooks[%d]: want a name, kind slack or json, and url_file (a file holding the URL)", i)
		}
	}
	return errors.Join(errs...)
}

func (s *Switch) check() error {
	if !switchName.MatchString(s.Name) {
		return fmt.Errorf("name %q: want letters, digits and ._+~- (it names a column and a URL)", s.Name)
	}
	if _, ok := opam.ParsePackage(s.Compiler); !ok {
		return fmt.Errorf("switch %s: compiler %q: want the compiler package as name.version, such as ocaml-base-compiler.5.2.0", s.Name, s.Compiler)
	}
	switch s.BuildWith {
	case "":
		s.BuildWith = BuildWithOpam
	case BuildWithOpam, BuildWithDune:
	default:
		return fmt.Errorf("switch %s: build-with %q: want opam or dune", s.Name, s.BuildWith)
	}
	for _, r := range s.Repositories {
		if n, u, ok := strings.Cut(r, "="); !ok || n == "" || u == "" {
			return fmt.Errorf("switch %s: repository %q: want NAME=URL-OR-PATH", s.Name, r)
		}
	}
	return nil
}

// platform is the matrix platform builds run on, and whose variables the solver uses.
func (c *Config) platform() (matrix.Platform, error) {
	var p matrix.Platform
	for _, b := range matrix.Default() {
		if b.Name == c.Platform.Name {
			p = b
		}
	}
	if p.Name == "" {
		if c.Platform.Image == "" || c.Platform.Pool == "" || len(c.Platform.Vars) == 0 {
			var names []string
			for _, b := range matrix.Default() {
				names = append(names, b.Name)
			}
			return p, fmt.Errorf("%q is not a built-in platform (%s): give its image, pool and vars", c.Platform.Name, strings.Join(names, ", "))
		}
		p = matrix.Platform{Name: c.Platform.Name}
	}
	if c.Platform.Image != "" {
		p.Image, p.Debian = c.Platform.Image, nil
	}
	if c.Platform.Pool != "" {
		p.Pool = c.Platform.Pool
	}
	if len(c.Platform.Vars) > 0 {
		p.Vars = c.Platform.Vars
	}
	return p, nil
}

// Switch returns the switch of that name.
func (c *Config) Switch(name string) (Switch, bool) {
	i := slices.IndexFunc(c.Switches, func(s Switch) bool { return s.Name == name })
	if i < 0 {
		return Switch{}, false
	}
	return c.Switches[i], true
}

// SwitchNames lists the switches' names, in order.
func (c *Config) SwitchNames() []string {
	out := make([]string, len(c.Switches))
	for i, s := range c.Switches {
		out[i] = s.Name
	}
	return out
}

// Marshal writes the configuration as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }
