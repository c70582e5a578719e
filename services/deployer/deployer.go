// Package deployer is kiln's deployer (ocurrent-deployer's counterpart): it watches the
// repositories of the services in its configuration file, builds every branch and pull
// request for deployability, publishes the configured branch's image to a registry,
// deploys it to staging, health-checks it, promotes the same digest to production, and
// rolls back a deploy whose health check fails. It keeps a deploy history per service,
// checks live services periodically, serves a status page and sends notifications.
package deployer

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

// Options configure a Deployer.
type Options struct {
	// ConfigFile is the configuration, read again when it changes.
	ConfigFile string
	// StateDir keeps the history, build logs and checkouts.
	StateDir string
	// Mirrors fetch the services' repositories (default: mirrors under StateDir).
	Mirrors *git.Mirrors
	// Forges, when set, receive each commit's deployability status.
	Forges  *forges.Set
	BaseURL string
	Logger  *slog.Logger
	// Register receives the deployer's metrics.
	Register prometheus.Registerer
	// Jobs makes every build, push, deploy, rollback and periodic health check an
	// engine job, shown in the console with its log. The engine must run Pipeline:
	// until it does, these steps wait.
	Jobs bool
	// Specs builds the services built from a builder spec (none: such a service's
	// builds fail saying so).
	Specs SpecRunner
}

// Deployer deploys the services of its configuration.
type Deployer struct {
	o   Options
	log *slog.Logger
	m   *metrics

	mu       sync.Mutex
	cfg      *Config
	cfgRaw   []byte
	cfgErr   error
	notifier *notify.Notifier
	st       *state
	busy     map[string]*sync.Mutex // one operation at a time per service
	// promotions waiting for the engine's confirmation (promote: engine)
	promotions *current.Var[[]Promotion]
	steps      *steps
	control    string // SSH master connections

	wg sync.WaitGroup
}

type metrics struct {
	deploys  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	healthy  *prometheus.GaugeVec
	reloads  *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deploys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_deployer_deploys_total",
			Help: "Deploys by service, stage and outcome (live, rolled-back, failed).",
		}, []string{"service", "stage", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_deployer_deploy_duration_seconds",
			Help:    "Time from the start of a deploy to a stage until it is live or rolled back.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 10),
		}, []string{"stage"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_deployer_healthy",
			Help: "1 when the last health check of a live service stage passed, 0 otherwise.",
		}, []string{"service", "stage"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_deployer_config_reloads_total",
			Help: "Configuration reloads by result (ok, invalid).",
		}, []string{"result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_deployer_retries_total",
			Help: "Deploys and pushes tried again after an infrastructure failure, by service, stage and kind of failure.",
		}, []string{"service", "stage", "kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deploys, m.duration, m.healthy, m.reloads, m.retries} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("deployer metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New reads the configuration and the saved state. An invalid configuration is an error.
func New(o Options) (*Deployer, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("deployer state: %w", err)
	}
	if o.Mirrors == nil {
		o.Mirrors = git.NewMirrors(filepath.Join(o.StateDir, "git"), git.MirrorsOptions{Logger: o.Logger})
	}
	m, err := newMetrics(o.Register)
	if err != nil {
		return nil, err
	}
	// A short path: a socket's path is limited to about 100 bytes.
	control, err := os.MkdirTemp("", "kiln-ssh-")
	if err != nil {
		return nil, err
	}
	d := &Deployer{o: o, log: o.Logger, m: m, busy: map[string]*sync.Mutex{}, control: control, steps: newSteps()}
	d.steps.on = o.Jobs
	if d.st, err = loadState(filepath.Join(o.StateDir, "state.json")); err != nil {
		os.RemoveAll(control)
		return nil, err
	}
	if _, err := d.Reload(); err != nil {
		os.RemoveAll(control)
		return nil, err
	}
	d.promotions = current.NewVar[[]Promotion]("deployer-promotions", nil)
	d.syncPromotions()
	return d, nil
}

// Reload reads the configuration file again if it changed. An invalid file keeps the
// previous configuration in force and is reported on the status page.
func (d *Deployer) Reload() (bool, error) {
	raw, err := os.ReadFile(d.o.ConfigFile)
	if err != nil {
		err = fmt.Errorf("deployer config: %w", err)
	}
	d.mu.Lock()
	if err == nil && d.cfg != nil && string(raw) == string(d.cfgRaw) && d.cfgErr == nil {
		d.mu.Unlock()
		return false, nil
	}
	d.mu.Unlock()
	var cfg *Config
	if err == nil {
		cfg, err = ParseConfig(raw)
		if err != nil {
			err = fmt.Errorf("deployer config %s: %w", d.o.ConfigFile, err)
		}
	}
	var n *notify.Notifier
	if err == nil {
		n, err = notify.New(notify.Options{Webhooks: cfg.Notify, Logger: d.log, Register: d.o.Register})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.m.reloads.WithLabelValues("invalid").Inc()
		d.cfgErr = err
		d.cfgRaw = raw
		if d.cfg != nil {
			d.log.Error("deployer: configuration not reloaded; the previous one stays in force", "err", err)
		}
		return false, err
	}
	d.m.reloads.WithLabelValues("ok").Inc()
	old, oldCfg := d.notifier, d.cfg
	d.cfg, d.cfgRaw, d.cfgErr, d.notifier = cfg, raw, nil, n
	if oldCfg != nil {
		d.closeMasters(oldCfg) // the hosts' settings may have changed
		d.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			old.Close(ctx)
		})
	}
	d.log.Info("deployer: configuration loaded", "services", len(cfg.Services))
	return true, nil
}

// Run polls the repositories, reloads the configuration and checks live services
// until ctx ends.
func (d *Deployer) Run(ctx context.Context) {
	d.mu.Lock()
	poll, every := d.cfg.Poll.Or(30*time.Second), d.cfg.HealthEvery.Or(30*time.Second)
	d.mu.Unlock()
	nextPoll, nextCheck := time.Now(), time.Now().Add(every)
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(nextPoll) {
			d.Reload()
			d.Poll(ctx)
			d.mu.Lock()
			poll, every = d.cfg.Poll.Or(30*time.Second), d.cfg.HealthEvery.Or(30*time.Second)
			d.mu.Unlock()
			nextPoll = time.Now().Add(poll)
		}
		if !now.Before(nextCheck) {
			d.CheckHealth(ctx)
			nextCheck = time.Now().Add(every)
		}
		sleep(ctx, min(time.Until(nextPoll), time.Until(nextCheck), time.Second))
	}
}

// Close waits for the operations started by admins, ends the SSH connections and
// delivers the notifications queued.
func (d *Deployer) Close() {
	d.wg.Wait()
	d.mu.Lock()
	n, cfg := d.notifier, d.cfg
	d.mu.Unlock()
	d.closeMasters(cfg)
	os.RemoveAll(d.control)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Close(ctx)
}

// dockerConfig is the docker client folder of the deployer's commands on this machine.
func (d *Deployer) dockerConfig() string { return filepath.Join(d.o.StateDir, "docker") }

// buildEngine is the engine images are built with, with the deployer's client folder.
func (d *Deployer) buildEngine(cfg *Config) *docker.Engine {
	return &docker.Engine{Host: cfg.BuildDockerHost, Env: []string{"DOCKER_CONFIG=" + d.dockerConfig()}}
}

// host is a configured host, this machine's with the deployer's docker client folder.
func (d *Deployer) host(cfg *Config, name string) Host {
	h := cfg.Hosts[name]
	if h.SSH == "" && h.DockerConfig == "" {
		h.DockerConfig = d.dockerConfig()
	}
	return h
}

// closeMasters ends the SSH master connections to the hosts of cfg.
func (d *Deployer) closeMasters(cfg *Config) {
	for name, h := range cfg.Hosts {
		(&runner{name: name, h: h, control: d.control}).closeMaster()
	}
}

func (d *Deployer) config() *Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Deployer) lock(service string) func() {
	d.mu.Lock()
	l, ok := d.busy[service]
	if !ok {
		l = &sync.Mutex{}
		d.busy[service] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (d *Deployer) notify(m notify.Message) {
	d.mu.Lock()
	n := d.notifier
	d.mu.Unlock()
	if m.Link == "" && d.o.BaseURL != "" {
		m.Link = strings.TrimSuffix(d.o.BaseURL, "/") + "/deployer"
	}
	n.Send(m)
}

// Poll reads every service's repository once, builds new commits and deploys a new
// head of the deployed branch.
func (d *Deployer) Poll(ctx context.Context) {
	cfg := d.config()
	for i := range cfg.Services {
		if ctx.Err() != nil {
			return
		}
		if err := d.pollService(ctx, cfg, &cfg.Services[i]); err != nil {
			d.log.Error("deployer: service", "service", cfg.Services[i].Name, "err", err)
		}
	}
}

func (d *Deployer) pollService(ctx context.Context, cfg *Config, svc *ServiceConfig) error {
	refs, err := git.LsRemote(ctx, svc.Repo, d.credentials(), "refs/heads/", "refs/pull/")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(refs))
	for r := range refs {
		if strings.HasPrefix(r, "refs/pull/") && !strings.HasSuffix(r, "/head") {
			continue
		}
		names = append(names, r)
	}
	slices.Sort(names)
	branch := "refs/heads/" + svc.Branch
	// The deployed branch first, so a deploy does not wait for every other build.
	if i := slices.Index(names, branch); i > 0 {
		names = append(append([]string{branch}, names[:i]...), names[i+1:]...)
	}
	listed := map[string]string{}
	for _, ref := range names {
		listed[ref] = refs[ref]
	}
	d.st.setRefs(svc.Name, listed) // refs gone from the repository are forgotten
	for _, ref := range names {
		commit := refs[ref]
		b := d.st.build(svc.Name, commit)
		if b == nil {
			unlock := d.lock(svc.Name)
			b = d.build(ctx, cfg, svc, ref, commit)
			unlock()
		}
		if ref != branch || b.State != forge.Passed || d.st.attempted(svc.Name) == commit {
			continue
		}
		unlock := d.lock(svc.Name)
		d.release(ctx, cfg, svc, commit, b)
		unlock()
	}
	d.save()
	return nil
}

func (d *Deployer) credentials() git.CredentialSource {
	if d.o.Forges == nil {
		return nil
	}
	return d.o.Forges.Credentials()
}

// build builds commit's image and records whether it is deployable.
func (d *Deployer) build(ctx context.Context, cfg *Config, svc *ServiceConfig, ref, commit string) *Build {
	b := &Build{Commit: commit, Ref: ref, Started: time.Now().UTC(), State: forge.Running, Tag: localTag(svc.Name, commit)}
	d.publishStatus(ctx, svc, ref, commit, forge.Running, "building")
	logPath := filepath.Join(d.o.StateDir, "logs", svc.Name+"-"+commit+".log")
	job, err := d.inJob(ctx, OpBuild, svc.Name, fmt.Sprintf("build %s %s (%s)", svc.Name, short(commit), ref), func(ctx context.Context, log io.Writer) error {
		var err error
		b.Snapshots, err = d.buildImage(ctx, cfg, svc, commit, b.Tag, logPath, log)
		return err
	})
	b.Job = job
	b.Finished = time.Now().UTC()
	if err != nil {
		if ctx.Err() != nil {
			return b
		}
		if current.KindOf(err).Infrastructure() || infrastructure(err) != "" {
			// Not the commit's fault (a worker lost, the network): built again next time.
			b.State, b.Message = forge.Error, err.Error()
			d.publishStatus(ctx, svc, ref, commit, forge.Error, "not built (infrastructure failure, built again at the next poll): "+firstLine(err.Error()))
		} else {
			b.State, b.Message = forge.Failed, err.Error()
			d.publishStatus(ctx, svc, ref, commit, forge.Failed, "not deployable: "+firstLine(err.Error()))
		}
	} else {
		b.State, b.Message = forge.Passed, "deployable"
		d.publishStatus(ctx, svc, ref, commit, forge.Passed, "deployable")
	}
	d.log.Info("deployer: built", "service", svc.Name, "ref", ref, "commit", short(commit), "state", b.State, "duration", b.Finished.Sub(b.Started))
	if b.State == forge.Passed && ref != "refs/heads/"+svc.Branch && svc.Spec == "" {
		// Only the deployed branch's images are published; the others' layers stay in
		// the engine's build cache. A release of the commit later builds it again.
		if err := dockerCmd(context.WithoutCancel(ctx), d.buildEngine(cfg), "rmi", b.Tag); err != nil {
			d.log.Warn("deployer: removing a built image", "tag", b.Tag, "err", err)
		}
	}
	d.st.putBuild(svc.Name, b)
	d.save()
	return b
}

// buildImage builds commit's image, its log written to logPath and to log: from a
// Dockerfile, as the build engine's image tag; from a spec, as the snapshots of its
// architectures, which it returns.
func (d *Deployer) buildImage(ctx context.Context, cfg *Config, svc *ServiceConfig, commit, tag, logPath string, log io.Writer) (map[string]string, error) {
	repo, err := d.o.Mirrors.FetchCommit(ctx, svc.Repo, commit)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", short(commit), err)
	}
	dir, err := os.MkdirTemp(d.o.StateDir, "checkout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	if err := repo.Checkout(ctx, commit, src); err != nil {
		return nil, fmt.Errorf("checkout %s: %w", short(commit), err)
	}
	ctxDir := filepath.Join(src, svc.Context)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	log = io.MultiWriter(logf, log)
	if svc.Spec != "" {
		return d.buildSpec(ctx, svc, commit, ctxDir, log)
	}
	df, err := os.ReadFile(filepath.Join(ctxDir, svc.Dockerfile))
	if err != nil {
		return nil, fmt.Errorf("no %s in %s at %s", svc.Dockerfile, svc.Context, short(commit))
	}
	var extra []string
	for _, k := range sortedKeys(svc.BuildArgs) {
		extra = append(extra, "--build-arg", k+"="+svc.BuildArgs[k])
	}
	e := d.buildEngine(cfg)
	return nil, e.BuildDockerfile(ctx, string(df), ctxDir, tag, log, extra...)
}

func (d *Deployer) publishStatus(ctx context.Context, svc *ServiceConfig, ref, commit string, st forge.State, msg string) {
	if d.o.Forges == nil || svc.Forge == "" {
		return
	}
	p := strings.Split(svc.Forge, "/")
	fr := forge.Ref{Repo: forge.RepoID{Forge: p[0], Owner: p[1], Name: p[2]}, Name: ref, Commit: commit, Remote: svc.Repo}
	if n, ok := strings.CutPrefix(ref, "refs/pull/"); ok {
		fr.PR, _ = strconv.Atoi(strings.TrimSuffix(n, "/head"))
	}
	v := []forge.Variant{{Name: "deployability", State: st, Message: msg}}
	if err := d.o.Forges.Publish(ctx, fr, forge.Status{State: st, Title: msg}, v); err != nil {
		d.log.Warn("deployer: status not published", "service", svc.Name, "commit", short(commit), "err", err)
	}
}

// release publishes a new head of the deployed branch and deploys it: to staging
// first when configured, then to production (at once, or when confirmed).
func (d *Deployer) release(ctx context.Context, cfg *Config, svc *ServiceConfig, commit string, b *Build) {
	d.st.setAttempted(svc.Name, commit)
	if svc.Spec != "" && !d.specBuilt(b) || svc.Spec == "" && !d.buildEngine(cfg).ImageExists(ctx, b.Tag) {
		// Built for another ref, or the engine lost it: build it again.
		if b = d.build(ctx, cfg, svc, "refs/heads/"+svc.Branch, commit); b.State != forge.Passed {
			d.finish(svc, "publish", commit, "", b.Job, time.Now(), fmt.Errorf("build %s again: %s", short(commit), b.Message))
			return
		}
	}
	var digest string
	start := time.Now()
	job, err := d.inJob(ctx, OpPush, svc.Name, fmt.Sprintf("push %s %s", svc.Name, short(commit)), func(ctx context.Context, log io.Writer) error {
		fmt.Fprintf(log, "pushing %s %s to %s/%s\n", svc.Name, short(commit), cfg.Registry.Address, svc.Image)
		err := d.retry(ctx, cfg, svc, "publish", 0, func() (err error) {
			if svc.Spec != "" {
				digest, err = d.publishSpec(ctx, cfg, svc, b, log)
			} else {
				digest, err = d.publish(ctx, cfg, svc, b.Tag)
			}
			return err
		})
		if err == nil {
			fmt.Fprintf(log, "pushed %s\n", digest)
		}
		return err
	})
	if err != nil {
		d.finish(svc, "publish", commit, "", job, start, err)
		return
	}
	d.st.setPublished(svc.Name, commit, digest, job)
	if svc.Staging != nil {
		if err := d.deploy(ctx, cfg, svc, "staging", commit, digest, "deploy", ""); err != nil {
			return
		}
		if svc.Promote != "auto" {
			d.st.setPending(svc.Name, &Pending{Commit: commit, Digest: digest, Since: time.Now().UTC()})
			d.save()
			d.syncPromotions()
			d.notify(notify.Message{Title: svc.Name + ": " + short(commit) + " waits for promotion to production", Severity: notify.Info,
				Fields: []notify.Field{{Name: "digest", Value: digest}}})
			return
		}
	}
	d.deploy(ctx, cfg, svc, "production", commit, digest, "deploy", "")
}

// publish pushes the local image tag to the registry and returns its digest.
func (d *Deployer) publish(ctx context.Context, cfg *Config, svc *ServiceConfig, tag string) (string, error) {
	c, err := d.registryClient(cfg)
	if err != nil {
		return "", err
	}
	h, err := c.PushFromEngine(ctx, d.buildEngine(cfg), tag, cfg.Registry.Address+"/"+svc.Image)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", svc.Image, err)
	}
	return h.String(), nil
}

func (d *Deployer) registryClient(cfg *Config) (*registry.Client, error) {
	var creds registry.Credentials
	if cfg.Registry.CredentialsFile != "" {
		var err error
		if creds, err = registry.ReadCredentials(cfg.Registry.CredentialsFile); err != nil {
			return nil, err
		}
	}
	return registry.New(registry.Options{Credentials: creds, Insecure: cfg.Registry.Insecure, Registerer: d.o.Register, Logger: d.log})
}

// stageOf resolves a service's stage to its runner.
func (d *Deployer) stageOf(cfg *Config, svc *ServiceConfig, name string) (*stage, error) {
	t := &svc.Production
	if name == "staging" {
		if svc.Staging == nil {
			return nil, fmt.Errorf("service %s has no staging target", svc.Name)
		}
		t = svc.Staging
	} else if name != "production" {
		return nil, fmt.Errorf("no stage %q (staging or production)", name)
	}
	r := &runner{name: t.Host, h: d.host(cfg, t.Host), log: d.log, control: d.control}
	s := &stage{name: name, t: t, r: r, health: svc.Health,
		logf: func(format string, args ...any) {
			d.log.Info("deployer: "+fmt.Sprintf(format, args...), "service", svc.Name, "stage", name)
		},
		build: &runner{name: "build", h: Host{DockerHost: cfg.BuildDockerHost, DockerConfig: d.dockerConfig()}, log: d.log},
		tmp:   d.o.StateDir,
	}
	if cfg.Registry.CredentialsFile != "" {
		s.login = func(ctx context.Context, r *runner) error {
			c, err := registry.ReadCredentials(cfg.Registry.CredentialsFile)
			if err != nil {
				return err
			}
			_, err = r.run(ctx, strings.NewReader(c.Password), "docker", "login", "--username", c.Username, "--password-stdin", cfg.Registry.Address)
			return err
		}
	}
	return s, nil
}

// deploy puts digest live on one stage of svc and records the outcome.
func (d *Deployer) deploy(ctx context.Context, cfg *Config, svc *ServiceConfig, stageName, commit, digest, kind, by string) error {
	start := time.Now()
	s, err := d.stageOf(cfg, svc, stageName)
	if err != nil {
		return err
	}
	rec := d.st.begin(Record{Service: svc.Name, Stage: stageName, Kind: kind, Commit: commit, Digest: digest, By: by, Started: start.UTC()})
	d.save()
	image := cfg.Registry.Address + "/" + svc.Image + "@" + digest
	op := OpDeploy
	if kind == "rollback" {
		op = OpRollback
	}
	_, err = d.inJob(ctx, op, svc.Name, fmt.Sprintf("%s %s %s to %s", kind, svc.Name, short(commit), stageName), func(ctx context.Context, log io.Writer) error {
		if j := jobOf(ctx); j != nil {
			d.st.setJob(rec, j.id)
			d.save()
		}
		d.log.Info("deployer: deploying", "service", svc.Name, "stage", stageName, "commit", short(commit), "digest", digest, "kind", kind)
		fmt.Fprintf(log, "deploying %s (commit %s) to %s on host %s (%s)\n", image, short(commit), stageName, s.t.Host, s.t.mode())
		logf := s.logf
		s.logf = func(format string, args ...any) {
			logf(format, args...)
			fmt.Fprintf(log, format+"\n", args...)
		}
		err := d.retry(ctx, cfg, svc, stageName, rec, func() error { return s.deploy(ctx, image) })
		if err == nil {
			fmt.Fprintf(log, "live on %s\n", stageName)
		}
		return err
	})
	d.finishRecord(svc, rec, start, err)
	return err
}

// retry runs do, and runs it again after an infrastructure failure, with a backoff
// doubled each time, up to the configured attempts. Each retry is recorded in the
// record rec (when not 0), logged and counted. The final error names the failure as the
// infrastructure's and says how many attempts were made.
func (d *Deployer) retry(ctx context.Context, cfg *Config, svc *ServiceConfig, stageName string, rec int, do func() error) error {
	attempts, wait := cmp.Or(cfg.Retry.Attempts, 4), cfg.Retry.Backoff.Or(10*time.Second)
	for attempt := 1; ; attempt++ {
		err := do()
		kind := infrastructure(err)
		if kind == "" {
			return err
		}
		if attempt >= attempts || ctx.Err() != nil {
			return fmt.Errorf("infrastructure failure (%s), %d attempts: %w", kind, attempt, err)
		}
		msg := fmt.Sprintf("attempt %d of %d failed (%s): %v; trying again in %s", attempt, attempts, kind, err, wait)
		d.log.Warn("deployer: "+msg, "service", svc.Name, "stage", stageName)
		jobLogf(ctx, "%s %s: %s", svc.Name, stageName, msg)
		d.m.retries.WithLabelValues(svc.Name, stageName, kind).Inc()
		if rec != 0 {
			d.st.retrying(rec, attempt, kind, msg)
			d.save()
		}
		if !sleep(ctx, wait) {
			return fmt.Errorf("infrastructure failure (%s), %d attempts, then cancelled: %w", kind, attempt, err)
		}
		wait *= 2
	}
}

// finish records a failure before any target was touched (publishing).
func (d *Deployer) finish(svc *ServiceConfig, what, commit, digest, job string, start time.Time, err error) {
	rec := d.st.begin(Record{Service: svc.Name, Stage: what, Kind: "deploy", Commit: commit, Digest: digest, Job: job, Started: start.UTC()})
	d.finishRecord(svc, rec, start, err)
}

func (d *Deployer) finishRecord(svc *ServiceConfig, id int, start time.Time, err error) {
	outcome, sev, msg := OutcomeLive, notify.Success, ""
	var he *HealthError
	switch {
	case err == nil:
	case errors.As(err, &he):
		outcome, sev, msg = OutcomeRolledBack, notify.Error, err.Error()
	default:
		outcome, sev, msg = OutcomeFailed, notify.Error, err.Error()
	}
	rec := d.st.end(id, outcome, msg, infrastructure(err))
	d.save()
	d.m.deploys.WithLabelValues(svc.Name, rec.Stage, outcome).Inc()
	if rec.Stage == "staging" || rec.Stage == "production" {
		d.m.duration.WithLabelValues(rec.Stage).Observe(time.Since(start).Seconds())
	}
	if outcome == OutcomeLive {
		d.m.healthy.WithLabelValues(svc.Name, rec.Stage).Set(1)
	}
	d.log.Info("deployer: deploy finished", "service", svc.Name, "stage", rec.Stage, "commit", short(rec.Commit), "digest", rec.Digest, "outcome", outcome, "err", msg)
	title := fmt.Sprintf("%s %s: %s %s", svc.Name, rec.Stage, short(rec.Commit), outcome)
	d.notify(notify.Message{Title: title, Text: msg, Severity: sev, Fields: []notify.Field{
		{Name: "service", Value: svc.Name}, {Name: "stage", Value: rec.Stage}, {Name: "commit", Value: rec.Commit},
		{Name: "digest", Value: rec.Digest}, {Name: "kind", Value: rec.Kind}}})
}

// ErrForbidden is an admin action without the admin token.
var ErrForbidden = errors.New("admin token missing or wrong")

// Admin checks an admin token against the configured one. Without admin_token_file
// every token passes: the console's admin role is then the only check.
func (d *Deployer) Admin(token string) error {
	cfg := d.config()
	if cfg.AdminTokenFile == "" {
		return nil
	}
	want, err := os.ReadFile(cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	w := strings.TrimSpace(string(want))
	if token == "" || w == "" || subtle.ConstantTimeCompare([]byte(token), []byte(w)) != 1 {
		return ErrForbidden
	}
	return nil
}

func (d *Deployer) service(cfg *Config, name string) (*ServiceConfig, error) {
	for i := range cfg.Services {
		if cfg.Services[i].Name == name {
			return &cfg.Services[i], nil
		}
	}
	return nil, fmt.Errorf("no service %q", name)
}

// Rollback deploys a digest the service had live before to one stage, health-checked.
func (d *Deployer) Rollback(ctx context.Context, service, stageName, digest, by string) error {
	cfg := d.config()
	svc, err := d.service(cfg, service)
	if err != nil {
		return err
	}
	commit, ok := d.st.wasLive(service, digest)
	if !ok {
		return fmt.Errorf("%s was never live for %s", digest, service)
	}
	defer d.lock(service)()
	return d.deploy(ctx, cfg, svc, stageName, commit, digest, "rollback", by)
}

// Promote deploys what waits for confirmation on staging to production.
func (d *Deployer) Promote(ctx context.Context, service, by string) error {
	cfg := d.config()
	svc, err := d.service(cfg, service)
	if err != nil {
		return err
	}
	defer d.lock(service)()
	p := d.st.pending(service)
	if p == nil {
		return fmt.Errorf("%s: nothing waits for promotion", service)
	}
	return d.promote(ctx, cfg, svc, p, by)
}

// promote deploys p, which waited on staging, to production. The caller holds the
// service's lock. The engine hears that the promotion is done only afterwards: its job
// would be cancelled as no longer wanted.
func (d *Deployer) promote(ctx context.Context, cfg *Config, svc *ServiceConfig, p *Pending, by string) error {
	d.st.setPending(svc.Name, nil)
	defer d.syncPromotions()
	return d.deploy(ctx, cfg, svc, "production", p.Commit, p.Digest, "promote", by)
}

// Promotion is a digest waiting on staging for the engine's confirmation.
type Promotion struct {
	Service string `json:"service"`
	Commit  string `json:"commit"`
	Digest  string `json:"digest"`
}

// syncPromotions gives the engine the promotions of services promoted through it.
func (d *Deployer) syncPromotions() {
	cfg := d.config()
	var ps []Promotion
	for _, svc := range cfg.Services {
		if p := d.st.pending(svc.Name); p != nil && svc.Promote == "engine" {
			ps = append(ps, Promotion{Service: svc.Name, Commit: p.Commit, Digest: p.Digest})
		}
	}
	d.promotions.Set(ps)
}

// Pipeline is the deployer's part of the engine's pipeline: the jobs of its steps
// (with Options.Jobs), and one job per promotion of a service with promote: engine, of
// level dangerous, so that it waits for an operator's confirmation in the console when
// the engine's confirm level is below that.
func (d *Deployer) Pipeline() current.Term[current.Unit] {
	op := &current.Op[Promotion, string]{
		Name:    OpPromote,
		Publish: true,
		Level:   current.LevelDangerous,
		Key:     func(p Promotion) string { return p.Service + "@" + p.Digest },
		Label:   func(p Promotion) string { return "promote " + p.Service + " " + short(p.Commit) + " to production" },
		Run: func(ctx context.Context, j *current.Job, p Promotion) (string, error) {
			cfg := d.config()
			svc, err := d.service(cfg, p.Service)
			if err != nil {
				return "", err
			}
			defer d.lock(p.Service)()
			pending := d.st.pending(p.Service)
			if pending == nil || pending.Digest != p.Digest {
				j.Logf("%s no longer waits for promotion: nothing to do", p.Digest)
				return "superseded", nil
			}
			j.Logf("promoting %s (%s) to production", short(p.Commit), p.Digest)
			if err := d.promote(withJob(ctx, j.ID(), j), cfg, svc, pending, "console"); err != nil {
				return "", err
			}
			j.Logf("live in production")
			return "live", nil
		},
	}
	promotions := current.ListIter(d.promotions.Term(), func(p Promotion) string { return p.Service },
		func(p current.Term[Promotion]) current.Term[current.Unit] {
			return current.Map(current.Do(op, p), func(string) current.Unit { return current.Unit{} })
		})
	return current.All(promotions, d.stepsPipeline())
}

// CheckHealth checks every live stage once and notifies changes.
func (d *Deployer) CheckHealth(ctx context.Context) {
	cfg := d.config()
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		for _, name := range []string{"staging", "production"} {
			live := d.st.live(svc.Name, name)
			if live == nil {
				continue
			}
			s, err := d.stageOf(cfg, svc, name)
			if err != nil {
				continue
			}
			var out string
			var ok bool
			job, _ := d.inJob(ctx, OpHealth, svc.Name, fmt.Sprintf("check %s %s (%s)", svc.Name, name, short(live.Commit)), func(ctx context.Context, log io.Writer) error {
				out, ok = s.checkOnce(ctx, s.liveURL())
				fmt.Fprintln(log, out)
				if !ok {
					return errors.New("unhealthy: " + firstLine(out))
				}
				return nil
			})
			if ctx.Err() != nil {
				return
			}
			changed := d.st.setHealth(svc.Name, name, ok, out, job)
			v := 0.0
			if ok {
				v = 1
			}
			d.m.healthy.WithLabelValues(svc.Name, name).Set(v)
			if changed {
				sev, word := notify.Success, "healthy again"
				if !ok {
					sev, word = notify.Error, "unhealthy"
				}
				d.log.Info("deployer: health changed", "service", svc.Name, "stage", name, "healthy", ok, "check", out)
				d.notify(notify.Message{Title: fmt.Sprintf("%s %s is %s", svc.Name, name, word), Text: out, Severity: sev})
			}
		}
	}
	d.save()
}

// liveURL is where the live version answers for periodic checks.
func (s *stage) liveURL() string {
	switch {
	case s.t.Container != nil && s.t.Container.Proxy.URL != "":
		return strings.TrimSuffix(s.t.Container.Proxy.URL, "/") + s.health.Path
	case s.t.Swarm != nil:
		return strings.TrimSuffix(s.t.Swarm.URL, "/") + s.health.Path
	case s.t.Command != nil:
		return strings.TrimSuffix(s.t.Command.URL, "/") + s.health.Path
	case s.t.Compose != nil:
		return strings.TrimSuffix(s.t.Compose.URL, "/") + s.health.Path
	}
	return ""
}

func (d *Deployer) save() {
	if err := d.st.save(); err != nil {
		d.log.Error("deployer: state not saved", "err", err)
	}
}

func localTag(service, commit string) string {
	return "kiln-deployer/" + service + ":" + commit
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
