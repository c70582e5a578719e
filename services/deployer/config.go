package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-ci/kiln/services/internal/notify"
)

// Config is the deployer's configuration file (docs/deployer.md).
type Config struct {
	// Poll is how often the services' repositories are read (default 30s).
	Poll Duration `yaml:"poll"`
	// HealthEvery is how often live targets are health-checked (default 30s).
	HealthEvery Duration `yaml:"health_every"`
	// Retry says how deploys and pushes that meet an infrastructure failure (a host,
	// its engine or the registry unreachable) are tried again.
	Retry RetryConfig `yaml:"retry"`
	// AdminTokenFile, when set, holds a token that rollbacks and promotions need besides
	// the console's admin role.
	AdminTokenFile string `yaml:"admin_token_file"`
	// BuildDockerHost is the Docker engine images are built with (default docker's own).
	BuildDockerHost string           `yaml:"build_docker_host"`
	Registry        RegistryConfig   `yaml:"registry"`
	Hosts           map[string]Host  `yaml:"hosts"`
	Notify          []notify.Webhook `yaml:"notify"`
	Services        []ServiceConfig  `yaml:"services"`
}

// RetryConfig bounds the automatic retries of infrastructure failures.
type RetryConfig struct {
	// Attempts is how many times in all (default 4; 1 does not retry).
	Attempts int `yaml:"attempts"`
	// Backoff is the wait before the first retry, doubled before each next one
	// (default 10s).
	Backoff Duration `yaml:"backoff"`
}

// RegistryConfig is where images are published.
type RegistryConfig struct {
	// Address is host[:port] of the registry.
	Address string `yaml:"address"`
	// CredentialsFile holds "user:password".
	CredentialsFile string `yaml:"credentials_file"`
	// Insecure talks plain HTTP to it.
	Insecure bool `yaml:"insecure"`
}

// Host is a machine running a Docker engine: this one (no SSH) or one reached by SSH.
type Host struct {
	// SSH is user@host[:port]; empty is this machine.
	SSH string `yaml:"ssh"`
	// KeyFile is the SSH private key.
	KeyFile string `yaml:"key_file"`
	// KnownHostsFile holds the host's key; a host not in it, or with another key, is refused.
	KnownHostsFile string `yaml:"known_hosts_file"`
	// DockerHost is the engine's address on that machine (DOCKER_HOST); empty is the default.
	DockerHost string `yaml:"docker_host"`
	// DockerConfig is the docker client's folder there (DOCKER_CONFIG), where docker
	// login keeps the registry credentials; empty is the user's ~/.docker, or for this
	// machine the deployer's own folder in its state dir.
	DockerConfig string `yaml:"docker_config"`
	// Address is how kiln reaches the host's published ports for health checks
	// (default 127.0.0.1 for this machine, the SSH host name otherwise).
	Address string `yaml:"address"`
}

// ServiceConfig is one deployed service.
type ServiceConfig struct {
	Name string `yaml:"name"`
	// Repo is the git remote watched; Branch the branch that deploys.
	Repo   string `yaml:"repo"`
	Branch string `yaml:"branch"`
	// Forge names the repository on its forge (github/owner/name) for statuses.
	Forge      string            `yaml:"forge"`
	Dockerfile string            `yaml:"dockerfile"`
	Context    string            `yaml:"context"`
	BuildArgs  map[string]string `yaml:"build_args"`
	// Archs are the architectures built (default this machine's). Other
	// architectures than this machine's need Spec.
	Archs []string `yaml:"archs"`
	// Spec, instead of Dockerfile, is a builder spec (relative to Context), built with
	// kiln's builder once per architecture, on the fleet's pool of each (arm64 under
	// qemu), and published as one multi-architecture index.
	Spec string `yaml:"spec,omitempty"`
	// From replaces the spec's (from …) for the architectures it names
	// (arm64: kiln/debian:bookworm-arm64).
	From map[string]string `yaml:"from,omitempty"`
	// ImageRoot is the folder of a spec's result that becomes the image's root
	// filesystem (default /: all of it).
	ImageRoot string `yaml:"image_root,omitempty"`
	// ImageConfig is the config of a spec's images.
	ImageConfig ImageSettings `yaml:"image_config,omitempty"`
	// Image is the repository in the registry (name, without the registry address).
	Image  string       `yaml:"image"`
	Health HealthConfig `yaml:"health"`
	// Promote says what follows a version that passed staging: auto (default)
	// deploys it to production at once; confirm waits for an admin (the status page's
	// Promote button); engine makes the promotion an engine job of level dangerous,
	// which waits for an operator's confirmation when the engine's confirm level is
	// below that (kiln serve --confirm), and runs at once otherwise.
	Promote    string  `yaml:"promote"`
	Staging    *Target `yaml:"staging,omitempty"`
	Production Target  `yaml:"production"`
}

// ImageSettings are what a spec's image runs and how.
type ImageSettings struct {
	Entrypoint []string `yaml:"entrypoint,omitempty"`
	Cmd        []string `yaml:"cmd,omitempty"`
	Env        []string `yaml:"env,omitempty"`
	WorkingDir string   `yaml:"workdir,omitempty"`
	User       string   `yaml:"user,omitempty"`
}

// HealthConfig is the HTTP check a deployed instance must pass.
type HealthConfig struct {
	// Path is requested on the instance (default /).
	Path string `yaml:"path"`
	// Expect, when set, must appear in the response body.
	Expect string `yaml:"expect"`
	// Deadline bounds how long a new instance has to pass (default 60s).
	Deadline Duration `yaml:"deadline"`
	// Command, when set, is run on the target's host instead (exit 0 is healthy).
	Command []string `yaml:"command"`
}

// Target is where one stage of a service runs. Exactly one of Container, Swarm and
// Command is set.
type Target struct {
	Host      string           `yaml:"host"`
	Container *ContainerTarget `yaml:"container,omitempty"`
	Swarm     *SwarmTarget     `yaml:"swarm,omitempty"`
	Command   *CommandTarget   `yaml:"command,omitempty"`
	Compose   *ComposeTarget   `yaml:"compose,omitempty"`
}

// ContainerTarget is a plain container replaced in place behind a reverse proxy: the
// new instance starts beside the old one, and the proxy is switched to it only once
// it is healthy.
type ContainerTarget struct {
	// Name prefixes the two instances' container names (NAME-a, NAME-b).
	Name string `yaml:"name"`
	// Port is the container's HTTP port, published on the slot's host port.
	Port int `yaml:"port"`
	// Network host runs the instances in the host's network, where each listens on
	// its slot's port, given to it as $PORT (for engines without a bridge network).
	Network string `yaml:"network"`
	// Slots are the two host ports the instances take in turn.
	Slots [2]int            `yaml:"slots"`
	Env   map[string]string `yaml:"env"`
	Proxy ProxyConfig       `yaml:"proxy"`
	// Drain is how long the old instance keeps running after the switch (default 2s).
	Drain Duration `yaml:"drain"`
}

// ProxyConfig is the reverse proxy in front of a container target: kiln writes its
// upstream file and runs Reload.
type ProxyConfig struct {
	// UpstreamFile is written with an nginx upstream block named Upstream.
	UpstreamFile string   `yaml:"upstream_file"`
	Upstream     string   `yaml:"upstream"`
	Reload       []string `yaml:"reload"`
	// URL is the public address, checked once switched and periodically.
	URL string `yaml:"url"`
}

// SwarmTarget is a swarm service updated to the new image.
type SwarmTarget struct {
	Service string `yaml:"service"`
	// URL is where the service answers for its health check.
	URL string `yaml:"url"`
	// UpdateOrder is start-first (default: the new task starts before the old one
	// stops) or stop-first (for services on the host network, whose tasks share a port).
	UpdateOrder string `yaml:"update_order"`
}

// ComposeTarget is a service of a docker-compose project on the host: its image is set
// in an override file beside the project's file (FILE without its extension, plus
// .kiln.yml), and the service is recreated.
type ComposeTarget struct {
	// File is the project's compose file on the host.
	File string `yaml:"file"`
	// Project is the project name (docker-compose -p; default: docker-compose's, the
	// file's folder name).
	Project string `yaml:"project"`
	// Service is the compose service that runs the image.
	Service string `yaml:"service"`
	// URL is where the service answers for its health check.
	URL string `yaml:"url"`
}

// CommandTarget copies a file out of the image to the host and runs a command there.
type CommandTarget struct {
	Artifact string   `yaml:"artifact"`
	Dest     string   `yaml:"dest"`
	Run      []string `yaml:"run"`
	// URL, when set, is health-checked after the command ran.
	URL string `yaml:"url"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (like 30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deployer config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("deployer config %s: %w", path, err)
	}
	return c, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// ParseConfig decodes a configuration and checks it: unknown keys, missing fields,
// unknown hosts and unreadable secret files are errors naming them.
func ParseConfig(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty")
		}
		return nil, err
	}
	return &c, c.check()
}

func (c *Config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	secret := func(what, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			bad("%s: %v", what, err)
			return
		}
		f.Close()
	}
	secret("admin_token_file", c.AdminTokenFile)
	if c.Retry.Attempts < 0 || c.Retry.Attempts > 20 {
		bad("retry.attempts: %d is not between 1 and 20", c.Retry.Attempts)
	}
	if c.Registry.Address == "" {
		bad("registry.address: missing")
	}
	secret("registry.credentials_file", c.Registry.CredentialsFile)
	for name, h := range c.Hosts {
		if !nameRE.MatchString(name) {
			bad("hosts: %q is not a name (lower case letters, digits, -_.)", name)
		}
		if h.SSH == "" {
			if h.KeyFile != "" || h.KnownHostsFile != "" {
				bad("hosts.%s: key_file and known_hosts_file need ssh", name)
			}
			continue
		}
		if _, _, _, err := splitSSH(h.SSH); err != nil {
			bad("hosts.%s.ssh: %v", name, err)
		}
		if h.KnownHostsFile == "" {
			bad("hosts.%s: known_hosts_file missing (host keys are never trusted on first use)", name)
		}
		if h.KeyFile == "" {
			bad("hosts.%s: key_file missing", name)
		}
		secret("hosts."+name+".key_file", h.KeyFile)
		secret("hosts."+name+".known_hosts_file", h.KnownHostsFile)
	}
	for i, w := range c.Notify {
		if w.Kind != notify.Slack && w.Kind != notify.JSON {
			bad("notify[%d]: kind %q: want slack or json", i, w.Kind)
		}
		if w.URLFile != "" {
			if _, err := notify.ReadSecretURL(w.URLFile); err != nil {
				bad("notify[%d]: %v", i, err)
			}
		}
	}
	seen := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		where := fmt.Sprintf("services[%d]", i)
		if !nameRE.MatchString(s.Name) {
			bad("%s.name: %q is not a name (lower case letters, digits, -_.)", where, s.Name)
		} else {
			where = "services." + s.Name
		}
		if seen[s.Name] {
			bad("%s: named twice", where)
		}
		seen[s.Name] = true
		if s.Repo == "" {
			bad("%s.repo: missing", where)
		}
		if s.Branch == "" {
			s.Branch = "main"
		}
		switch {
		case s.Spec != "" && s.Dockerfile != "":
			bad("%s: dockerfile and spec: give one", where)
		case s.Spec == "" && s.Dockerfile == "":
			s.Dockerfile = "Dockerfile"
		}
		if s.Context == "" {
			s.Context = "."
		}
		if s.Image == "" {
			bad("%s.image: missing", where)
		}
		c.checkBuild(where, s, bad)
		switch s.Promote {
		case "":
			s.Promote = "auto"
		case "auto", "confirm", "engine":
		default:
			bad("%s.promote: %q: want auto, confirm or engine", where, s.Promote)
		}
		if s.Forge != "" && len(strings.Split(s.Forge, "/")) != 3 {
			bad("%s.forge: %q: want FORGE/OWNER/NAME", where, s.Forge)
		}
		if s.Health.Path == "" {
			s.Health.Path = "/"
		}
		if s.Staging != nil {
			c.checkTarget(where+".staging", s.Staging, bad)
		}
		c.checkTarget(where+".production", &s.Production, bad)
	}
	return errors.Join(errs...)
}

// archPools are the architectures a spec is built for, and the fleet's pool of each.
var archPools = map[string]string{"amd64": "linux-x86_64", "arm64": "linux-arm64", "ppc64el": "linux-ppc64le", "s390x": "linux-s390x", "riscv64": "linux-riscv64"}

// checkBuild checks how a service is built: a Dockerfile builds this machine's
// architecture only; a spec any architecture of the fleet.
func (c *Config) checkBuild(where string, s *ServiceConfig, bad func(string, ...any)) {
	if len(s.Archs) == 0 {
		s.Archs = []string{runtime.GOARCH}
	}
	seen := map[string]bool{}
	for _, a := range s.Archs {
		switch {
		case seen[a]:
			bad("%s.archs: %s twice", where, a)
		case s.Spec == "" && a != runtime.GOARCH:
			bad("%s.archs: %s: a Dockerfile builds only this machine's architecture (%s); a spec builds others", where, a, runtime.GOARCH)
		case s.Spec != "" && archPools[a] == "":
			bad("%s.archs: %s: not one of amd64, arm64, ppc64el, s390x, riscv64", where, a)
		}
		seen[a] = true
	}
	if s.Spec == "" {
		ic := s.ImageConfig
		if len(s.From) > 0 || s.ImageRoot != "" || len(ic.Entrypoint)+len(ic.Cmd)+len(ic.Env) > 0 || ic.WorkingDir != "" || ic.User != "" {
			bad("%s: from, image_root and image_config are for a spec", where)
		}
		return
	}
	for a := range s.From {
		if !seen[a] {
			bad("%s.from: %s is not one of archs", where, a)
		}
	}
	if s.ImageRoot == "" {
		s.ImageRoot = "/"
	}
	if !strings.HasPrefix(s.ImageRoot, "/") || strings.Contains(s.ImageRoot, "..") {
		bad("%s.image_root: %q: want an absolute path without ..", where, s.ImageRoot)
	}
}

func (c *Config) checkTarget(where string, t *Target, bad func(string, ...any)) {
	if _, ok := c.Hosts[t.Host]; !ok {
		bad("%s.host: %q is not one of hosts", where, t.Host)
	}
	n := 0
	if ct := t.Compose; ct != nil {
		n++
		if !strings.HasPrefix(ct.File, "/") || ct.Service == "" {
			bad("%s.compose: file (an absolute path) and service are needed", where)
		}
		checkURL(where+".compose.url", ct.URL, bad)
	}
	if ct := t.Container; ct != nil {
		n++
		if !nameRE.MatchString(ct.Name) {
			bad("%s.container.name: %q is not a name", where, ct.Name)
		}
		if ct.Network != "" && ct.Network != "host" {
			bad("%s.container.network: %q: want host or nothing", where, ct.Network)
		}
		if (ct.Port <= 0 && ct.Network == "") || ct.Slots[0] <= 0 || ct.Slots[1] <= 0 || ct.Slots[0] == ct.Slots[1] {
			bad("%s.container: port and two different slots (host ports) are needed", where)
		}
		if ct.Proxy.UpstreamFile == "" || ct.Proxy.Upstream == "" || len(ct.Proxy.Reload) == 0 {
			bad("%s.container.proxy: upstream_file, upstream and reload are needed", where)
		}
		checkURL(where+".container.proxy.url", ct.Proxy.URL, bad)
	}
	if st := t.Swarm; st != nil {
		n++
		if st.Service == "" {
			bad("%s.swarm.service: missing", where)
		}
		checkURL(where+".swarm.url", st.URL, bad)
		switch st.UpdateOrder {
		case "":
			st.UpdateOrder = "start-first"
		case "start-first", "stop-first":
		default:
			bad("%s.swarm.update_order: %q: want start-first or stop-first", where, st.UpdateOrder)
		}
	}
	if ct := t.Command; ct != nil {
		n++
		if ct.Artifact == "" || ct.Dest == "" || len(ct.Run) == 0 {
			bad("%s.command: artifact, dest and run are needed", where)
		}
		if ct.URL != "" {
			checkURL(where+".command.url", ct.URL, bad)
		}
	}
	if n != 1 {
		bad("%s: want exactly one of container, swarm, compose or command", where)
	}
}

func checkURL(where, s string, bad func(string, ...any)) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("%s: %q is not an http(s) URL", where, s)
	}
}

// splitSSH reads user@host[:port].
func splitSSH(s string) (user, host string, port int, err error) {
	user, rest, ok := strings.Cut(s, "@")
	if !ok || user == "" || rest == "" {
		return "", "", 0, fmt.Errorf("%q: want user@host[:port]", s)
	}
	host, p, ok := strings.Cut(rest, ":")
	port = 22
	if ok {
		port, err = strconv.Atoi(p)
		if err != nil || port <= 0 || port > 65535 {
			return "", "", 0, fmt.Errorf("%q: bad port", s)
		}
	}
	return user, host, port, nil
}
