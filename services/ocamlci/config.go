package ocamlci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ConfigFile is the name of the per-repository configuration file at the root of a
// repository.
const ConfigFile = ".kiln.yml"

// Config is a repository's own CI configuration, read from .kiln.yml. The zero
// Config means the defaults: every default platform, every lint, no extra tests.
type Config struct {
	Platforms PlatformSelection `yaml:"platforms" json:"platforms"`
	// OpamRepositories are extra opam repositories the solver and builds use, before
	// opam-repository.
	OpamRepositories []ExtraRepository `yaml:"opam-repositories" json:"opam_repositories,omitempty"`
	Lint             LintConfig        `yaml:"lint" json:"lint"`
	// TestCommands run after the build and tests of every platform variant, in order.
	TestCommands []string `yaml:"test-commands" json:"test_commands,omitempty"`
	// Nix asks for a Nix variant: the repository's own Nix expression built on the
	// fleet's Nix pool (docs/nix.md).
	Nix *NixConfig `yaml:"nix" json:"nix,omitempty"`
	// Bench is the benchmarking service's section of the same file; that service
	// reads and checks it, ocaml-ci accepts it as it is.
	Bench yaml.Node `yaml:"bench" json:"-"`
}

// PlatformSelection changes the server's platform matrix for one repository.
type PlatformSelection struct {
	// Skip names platforms (or shell patterns of names) not to build on.
	Skip []string `yaml:"skip" json:"skip,omitempty"`
	// Add names platforms of the server's catalogue that are not built by default.
	Add []string `yaml:"add" json:"add,omitempty"`
}

// ExtraRepository is an extra opam repository.
type ExtraRepository struct {
	Name string `yaml:"name" json:"name"`
	URL  string `yaml:"url" json:"url"`
	// Branch is the branch read (default main, else master).
	Branch string `yaml:"branch" json:"branch,omitempty"`
}

// LintConfig turns lint jobs off; each is on unless set to false.
type LintConfig struct {
	Fmt        *bool `yaml:"fmt" json:"fmt,omitempty"`
	Doc        *bool `yaml:"doc" json:"doc,omitempty"`
	Opam       *bool `yaml:"opam" json:"opam,omitempty"`
	LowerBound *bool `yaml:"lower-bound" json:"lower_bound,omitempty"`
}

func on(b *bool) bool { return b == nil || *b }

// FmtEnabled, DocEnabled, OpamEnabled and LowerBoundEnabled report which lints run.
func (l LintConfig) FmtEnabled() bool        { return on(l.Fmt) }
func (l LintConfig) DocEnabled() bool        { return on(l.Doc) }
func (l LintConfig) OpamEnabled() bool       { return on(l.Opam) }
func (l LintConfig) LowerBoundEnabled() bool { return on(l.LowerBound) }

// ConfigError is a problem in .kiln.yml, with the line it is on when known.
type ConfigError struct {
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", ConfigFile, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", ConfigFile, e.Msg)
}

// LoadConfig reads the configuration at path; a missing file is the zero Config.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, err
	}
	return ParseConfig(data)
}

// ParseConfig reads and validates .kiln.yml content. Unknown fields are errors, so
// a misspelt key is not silently ignored.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, &ConfigError{Msg: "only one YAML document is allowed"}
	}
	return c, c.validate()
}

// yamlError turns the YAML library's messages ("yaml: line 3: …") into ConfigErrors.
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return &ConfigError{Msg: strings.Join(te.Errors, "; ")}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		_, msg, _ = strings.Cut(msg, ": ")
	}
	return &ConfigError{Line: line, Msg: msg}
}

func (c Config) validate() error {
	for _, p := range append(append([]string{}, c.Platforms.Skip...), c.Platforms.Add...) {
		if _, err := path.Match(p, ""); err != nil || strings.TrimSpace(p) == "" {
			return &ConfigError{Msg: fmt.Sprintf("platforms: %q is not a platform name or pattern", p)}
		}
	}
	seen := map[string]bool{}
	for i, r := range c.OpamRepositories {
		switch {
		case r.Name == "" || strings.ContainsAny(r.Name, " /\t"):
			return &ConfigError{Msg: fmt.Sprintf("opam-repositories[%d]: name %q must be a non-empty word", i, r.Name)}
		case seen[r.Name]:
			return &ConfigError{Msg: fmt.Sprintf("opam-repositories[%d]: name %q is used twice", i, r.Name)}
		case r.URL == "":
			return &ConfigError{Msg: fmt.Sprintf("opam-repositories[%d] (%s): url is missing", i, r.Name)}
		}
		seen[r.Name] = true
	}
	if err := c.Nix.validate(); err != nil {
		return err
	}
	for i, cmd := range c.TestCommands {
		if strings.TrimSpace(cmd) == "" {
			return &ConfigError{Msg: fmt.Sprintf("test-commands[%d] is empty", i)}
		}
	}
	return nil
}
