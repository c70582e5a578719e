package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// ConfigFile is the repository's configuration file; the bench service reads its
// "bench" section only.
const ConfigFile = ".kiln.yml"

// PRPolicy says which pull requests are benchmarked.
type PRPolicy string

// The pull request policies.
const (
	PRAlways PRPolicy = "always"
	PRLabel  PRPolicy = "label" // only those with Config.Label
	PRNever  PRPolicy = "never"
)

// Config is a repository's benchmark configuration: the bench section of .kiln.yml.
// A repository without one is not benchmarked.
type Config struct {
	// Command runs the benchmark (with sh -c) and prints its results (default make bench).
	Command string `yaml:"command" json:"command"`
	// Branches are benchmarked on every new head (default main).
	Branches []string `yaml:"branches" json:"branches"`
	// PullRequests says which PRs are benchmarked (default always).
	PullRequests PRPolicy `yaml:"pull-requests" json:"pull_requests"`
	// Label marks the PRs benchmarked when PullRequests is label (default benchmark).
	Label string `yaml:"label" json:"label,omitempty"`
	// Schedule runs the branches' heads again, even unchanged (zero: never).
	Schedule Schedule `yaml:"schedule" json:"schedule"`
	// Env is added to the benchmark's environment.
	Env map[string]string `yaml:"env" json:"env,omitempty"`
	// Pool is the fleet pool of benchmark slots (default bench).
	Pool string `yaml:"pool" json:"pool"`
	// Repeats is the number of times the benchmark runs (interleaved with the base for
	// a PR); default 5, at most 50.
	Repeats int `yaml:"repeats" json:"repeats"`
	// Timeout ends a benchmark that runs longer (default 1h).
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Duration is a time.Duration written as "90s", "30m" or "24h".
type Duration time.Duration

// UnmarshalYAML reads a Go duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration such as 30m or 24h", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Schedule is when the branches' heads are benchmarked again: every so long ("24h") or
// at the times of a cron expression ("0 3 * * *", "@daily"), in UTC.
type Schedule struct {
	Spec  string // "@every 24h0m0s" for a duration, else the cron expression
	sched cron.Schedule
}

// UnmarshalYAML reads a duration or a cron expression.
func (s *Schedule) UnmarshalYAML(n *yaml.Node) error {
	spec := n.Value
	if d, err := time.ParseDuration(n.Value); err == nil {
		if d <= 0 {
			return fmt.Errorf("schedule %q is not a positive duration", n.Value)
		}
		spec = "@every " + d.String()
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return fmt.Errorf("schedule %q is neither a duration such as 24h nor a cron expression such as \"0 3 * * *\": %v", n.Value, err)
	}
	*s = Schedule{Spec: spec, sched: sched}
	return nil
}

// MarshalJSON writes the schedule's spec.
func (s Schedule) MarshalJSON() ([]byte, error) { return json.Marshal(s.Spec) }

// Next is the first time the schedule is due after t; zero for no schedule.
func (s Schedule) Next(t time.Time) time.Time {
	if s.sched == nil {
		return time.Time{}
	}
	return s.sched.Next(t.UTC())
}

// shortestGap is the shortest time between the schedule's next 50 activations.
func (s Schedule) shortestGap() time.Duration {
	t := s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	gap := time.Duration(math.MaxInt64)
	for range 50 {
		n := s.Next(t)
		gap = min(gap, n.Sub(t))
		t = n
	}
	return gap
}

// ConfigError is a problem in the bench section, at a line of .kiln.yml when known.
type ConfigError struct {
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: bench: %s", ConfigFile, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: bench: %s", ConfigFile, e.Msg)
}

var configKeys = []string{"command", "branches", "pull-requests", "label", "schedule", "env", "pool", "repeats", "timeout"}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseConfig reads the bench section of .kiln.yml content. ok is false when there is
// none (the repository is not benchmarked). Other sections are left to their services.
func ParseConfig(data []byte) (c Config, ok bool, err error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return c, false, nil
		}
		return c, false, &ConfigError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return c, false, nil
	}
	top := doc.Content[0]
	var sec *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "bench" {
			sec = top.Content[i+1]
		}
	}
	if sec == nil {
		return c, false, nil
	}
	if sec.Kind != yaml.MappingNode {
		if sec.Tag == "!!null" {
			return c.withDefaults(), true, nil // "bench:" alone: every default
		}
		return c, false, &ConfigError{Line: sec.Line, Msg: "is not a mapping of settings"}
	}
	for i := 0; i+1 < len(sec.Content); i += 2 {
		if k := sec.Content[i]; !slices.Contains(configKeys, k.Value) {
			return c, false, &ConfigError{Line: k.Line, Msg: fmt.Sprintf("unknown setting %q (known: %s)", k.Value, strings.Join(configKeys, ", "))}
		}
	}
	if err := sec.Decode(&c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return c, false, &ConfigError{Msg: strings.Join(te.Errors, "; ")}
		}
		return c, false, &ConfigError{Line: sec.Line, Msg: err.Error()}
	}
	c = c.withDefaults()
	return c, true, c.validate()
}

func (c Config) withDefaults() Config {
	if strings.TrimSpace(c.Command) == "" {
		c.Command = "make bench"
	}
	if len(c.Branches) == 0 {
		c.Branches = []string{"main"}
	}
	if c.PullRequests == "" {
		c.PullRequests = PRAlways
	}
	if c.PullRequests == PRLabel && c.Label == "" {
		c.Label = "benchmark"
	}
	if c.Pool == "" {
		c.Pool = "bench"
	}
	if c.Repeats == 0 {
		c.Repeats = 5
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(time.Hour)
	}
	return c
}

func (c Config) validate() error {
	switch c.PullRequests {
	case PRAlways, PRLabel, PRNever:
	default:
		return &ConfigError{Msg: fmt.Sprintf("pull-requests is %q, not always, label or never", c.PullRequests)}
	}
	if c.Repeats < 1 || c.Repeats > 50 {
		return &ConfigError{Msg: fmt.Sprintf("repeats is %d, not 1 to 50", c.Repeats)}
	}
	for _, b := range c.Branches {
		if strings.TrimSpace(b) == "" {
			return &ConfigError{Msg: "a branch name is empty"}
		}
	}
	for k := range c.Env {
		if !envName.MatchString(k) {
			return &ConfigError{Msg: fmt.Sprintf("env: %q is not a variable name", k)}
		}
	}
	if c.Schedule.sched != nil {
		if g := c.Schedule.shortestGap(); g < time.Hour {
			return &ConfigError{Msg: fmt.Sprintf("schedule %q runs every %s; at least 1h apart", c.Schedule.Spec, g)}
		}
	}
	return nil
}

// Wants reports whether a PR with these labels is benchmarked.
func (c Config) Wants(labels []string) bool {
	switch c.PullRequests {
	case PRAlways:
		return true
	case PRLabel:
		return slices.Contains(labels, c.Label)
	}
	return false
}

// OnBranch reports whether branch is benchmarked.
func (c Config) OnBranch(branch string) bool { return slices.Contains(c.Branches, branch) }
