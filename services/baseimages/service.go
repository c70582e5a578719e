package baseimages

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current"
	rootfs "github.com/kiln-ci/kiln/services/internal/baseimages"
)

// Service is the base-images pipeline: it follows the opam repository's branch and
// the Debian suites' releases, builds every image of the plan on its architecture's
// pool, and publishes what changed.
type Service struct {
	Config *Config
	// OpamGit is the git directory of the opam repository followed.
	OpamGit string
	// Images is the image store the root filesystems are made in (the workers').
	Images    string
	Runner    Runner
	Publisher *Publisher
	// WorkDir keeps build contexts, exported images and the index.
	WorkDir string
	Index   *IndexFile
	Logger  *slog.Logger
	// Release reads the date of a suite's Release file on a mirror (default: over
	// HTTP); nil Release and an unreachable mirror leave the root filesystems as
	// they are.
	Release func(ctx context.Context, mirror, suite string) (string, error)
	// EnsureRootfs makes a root filesystem in the store (default: the store's
	// EnsureDebian, with mmdebstrap).
	EnsureRootfs func(*image.Store, context.Context, image.DebianOptions) (image.Base, error)

	exporter *Exporter
	head     *current.Monitor[string]
	releases map[string]*current.Monitor[string]
	metrics  *metrics
	buildOp  *current.Op[buildIn, Built]
	pubOp    *current.Op[publishIn, Report]
	rootOp   *current.Op[image.DebianOptions, string]
}

type metrics struct {
	builds    *prometheus.CounterVec
	published *prometheus.CounterVec
	tags      *prometheus.GaugeVec
	seconds   *prometheus.HistogramVec
}

// NewService checks the service's parts and registers its metrics on reg (nil: none):
// kiln_baseimages_builds_total{image,arch,outcome}, kiln_baseimages_build_seconds{arch},
// kiln_baseimages_published_total{kind} (images, tags, deprecations) and
// kiln_baseimages_tags{state} (current, deprecated).
func NewService(s *Service, reg prometheus.Registerer) (*Service, error) {
	if s.Config == nil || s.Runner == nil || s.WorkDir == "" || s.OpamGit == "" {
		return nil, fmt.Errorf("base-images: config, runner, work dir and opam repository are required")
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Index == nil {
		s.Index = &IndexFile{Path: filepath.Join(s.WorkDir, "index.json")}
	}
	if s.Release == nil {
		s.Release = ReleaseDate
	}
	s.exporter = &Exporter{Dir: filepath.Join(s.WorkDir, "export"), Runner: s.Runner}
	if s.Publisher != nil {
		s.Publisher.Exporter = s.exporter
	}
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_baseimages_builds_total",
			Help: "Image builds by image, architecture and outcome (ok, failed)."}, []string{"image", "arch", "outcome"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_baseimages_published_total",
			Help: "What publications changed in the registry, by kind (image, tag, deprecation, unchanged_tag)."}, []string{"kind"}),
		tags: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_baseimages_tags",
			Help: "Published tags by state (current, deprecated)."}, []string{"state"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_baseimages_build_seconds",
			Help: "Time to build and export one image, by architecture.", Buckets: prometheus.ExponentialBuckets(1, 3, 10)}, []string{"arch"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.builds, m.published, m.tags, m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("base-images metrics: %w", err)
			}
		}
	}
	s.metrics = m
	every := time.Duration(s.Config.Refresh)
	s.head = current.Poll("opam-repository head ("+s.Config.OpamRepository.Branch+")", every, s.readHead)
	s.releases = map[string]*current.Monitor[string]{}
	for _, dc := range s.Config.Distros {
		d, _ := LookupDistro(dc.Name)
		mirror := dc.mirror()
		s.releases[dc.Name] = current.Poll("Debian "+d.Suite+" release", every, func(ctx context.Context) (string, error) {
			if dc.Snapshot != "" {
				return "", nil // a snapshot of the mirror does not change
			}
			r, err := s.Release(ctx, mirror, d.Suite)
			if err != nil {
				s.Logger.Warn("base-images: Debian release date unknown; the root filesystem stays as it is", "suite", d.Suite, "err", err)
				return "", nil
			}
			return r, nil
		})
	}
	s.rootOp = (&rootfs.Maker{Dir: s.Images, Ensure: s.EnsureRootfs}).Op("baseimages-rootfs")
	s.buildOp = &current.Op[buildIn, Built]{
		Name:  "baseimages-build",
		Key:   func(in buildIn) string { return in.Build.Name() },
		Label: func(in buildIn) string { return in.Build.Name() },
		Pool:  "fleet",
		Run:   s.runBuild,
	}
	s.pubOp = &current.Op[publishIn, Report]{
		Name: "baseimages-publish", Publish: true, Level: current.LevelAverage,
		Key:   func(publishIn) string { return "publish" },
		Label: func(in publishIn) string { return fmt.Sprintf("publish %d images", len(in.Builds)) },
		Run:   s.runPublish,
	}
	return s, nil
}

// Refresh reads the inputs again now (the opam repository's head, the Debian
// releases) instead of at the next weekly refresh.
func (s *Service) Refresh() {
	s.head.Refresh()
	for _, m := range s.releases {
		m.Refresh()
	}
}

func (s *Service) readHead(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "--git-dir", s.OpamGit, "rev-parse", "--verify", s.Config.OpamRepository.Branch+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("opam repository %s: branch %s: %w", s.OpamGit, s.Config.OpamRepository.Branch, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ReleaseDate reads the Date of a suite's Release file on a Debian mirror, as
// YYYYMMDD.
func ReleaseDate(ctx context.Context, mirror, suite string) (string, error) {
	if mirror == "" {
		mirror = image.DefaultMirror
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(mirror, "/")+"/dists/"+suite+"/Release", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("Release of %s: %w", suite, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("Release of %s: %s", suite, resp.Status)
	}
	return parseReleaseDate(io.LimitReader(resp.Body, 1<<16))
}

func parseReleaseDate(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Date: "); ok {
			t, err := time.Parse(time.RFC1123, strings.TrimSpace(v))
			if err != nil {
				if t, err = time.Parse(time.RFC1123Z, strings.TrimSpace(v)); err != nil {
					return "", fmt.Errorf("Release: date %q: %w", v, err)
				}
			}
			return t.UTC().Format("20060102"), nil
		}
	}
	return "", fmt.Errorf("Release: no Date field")
}

// buildIn is one build's input: everything its image depends on.
type buildIn struct {
	Build   Build               `json:"build"`
	Rootfs  string              `json:"rootfs"` // local name (made before)
	Recipe  string              `json:"recipe"`
	Commit  string              `json:"commit"`
	Context string              `json:"context"`
	Date    int64               `json:"date"`
	Parent  *Built              `json:"parent,omitempty"`
	Opts    image.DebianOptions `json:"opts"`
}

type opamContext struct {
	Dir    string `json:"dir"`
	Commit string `json:"commit"`
	Date   int64  `json:"date"`
}

func (s *Service) runBuild(ctx context.Context, j *current.Job, in buildIn) (Built, error) {
	st, err := image.Open(s.Images)
	if err != nil {
		return Built{}, current.Infra(current.FailDiskFull, err)
	}
	rfs, err := RootfsOf(ctx, st, in.Opts)
	if err != nil {
		return Built{}, err
	}
	start := time.Now()
	out, err := s.exporter.Make(ctx, j, in.Build, rfs, in.Context, in.Commit, time.Unix(in.Date, 0).UTC(), in.Parent)
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	s.metrics.builds.WithLabelValues(in.Build.Image.Name(), in.Build.Arch.Name, outcome).Inc()
	s.metrics.seconds.WithLabelValues(in.Build.Arch.Name).Observe(time.Since(start).Seconds())
	return out, err
}

// publishIn is the publication's input: every build of the plan.
type publishIn struct {
	Builds map[string]Built `json:"builds"`
}

func (s *Service) runPublish(ctx context.Context, j *current.Job, in publishIn) (Report, error) {
	if s.Publisher == nil {
		j.Logf("no registry configured: nothing published")
		return Report{}, nil
	}
	plan := s.Config.Plan()
	old, err := s.Index.Load()
	if err != nil {
		return Report{}, err
	}
	rep, err := s.Publisher.Publish(ctx, j, plan, in.Builds, old)
	s.metrics.published.WithLabelValues("image").Add(float64(len(rep.Pushed)))
	s.metrics.published.WithLabelValues("tag").Add(float64(len(rep.Tags)))
	s.metrics.published.WithLabelValues("unchanged_tag").Add(float64(len(rep.Unchanged)))
	s.metrics.published.WithLabelValues("deprecation").Add(float64(len(rep.Deprecated)))
	if err != nil {
		return rep, err
	}
	old.Repository = s.Publisher.Repository
	old.Update(plan, in.Builds, rep)
	var cur, dep float64
	for _, e := range old.Tags {
		if e.Deprecated != "" {
			dep++
		} else {
			cur++
		}
	}
	s.metrics.tags.WithLabelValues("current").Set(cur)
	s.metrics.tags.WithLabelValues("deprecated").Set(dep)
	j.Logf("published: %d images pushed, %d already there; %d tags moved, %d unchanged, %d deprecated",
		len(rep.Pushed), len(rep.Present), len(rep.Tags), len(rep.Unchanged), len(rep.Deprecated))
	return rep, s.Index.Save(old)
}

// Pipeline is the service's pipeline.
func (s *Service) Pipeline() current.Term[current.Unit] {
	plan := s.Config.Plan()
	head := s.head.Term()
	ctxOp := &current.Op[string, opamContext]{
		Name:  "baseimages-context",
		Label: func(c string) string { return "opam repository " + short(c) },
		Run: func(ctx context.Context, j *current.Job, commit string) (opamContext, error) {
			dir, date, err := OpamContext(ctx, s.OpamGit, commit, filepath.Join(s.WorkDir, "contexts"), plan.Builds,
				func(b Build) string { n, _ := b.Rootfs("").LocalName(); return n })
			if err != nil {
				return opamContext{}, err
			}
			j.Logf("build context %s", dir)
			return opamContext{Dir: dir, Commit: commit, Date: date.Unix()}, nil
		},
	}
	cctx := current.Do(ctxOp, head)
	built := map[string]current.Term[Built]{}
	var all []current.AnyTerm
	for _, compilers := range []bool{false, true} {
		for _, b := range plan.Builds {
			if (b.Image.OCaml != "") != compilers {
				continue
			}
			b := b
			opts := current.Map(s.releases[b.Image.Distro.Name].Term(), func(r string) image.DebianOptions { return b.Rootfs(r) })
			rootName := current.Do(s.rootOp, opts)
			in := current.Map3(cctx, current.Pair(rootName, opts), parentTerm(built, b), func(c opamContext, r current.Tuple[string, image.DebianOptions], p *Built) buildIn {
				return buildIn{Build: b, Rootfs: r.First, Opts: r.Second, Recipe: r.Second.Recipe(), Commit: c.Commit, Context: c.Dir, Date: c.Date, Parent: p}
			})
			t := current.Do(s.buildOp, in)
			built[b.Name()] = t
			all = append(all, t)
		}
	}
	names := make([]string, 0, len(built))
	for n := range built {
		names = append(names, n)
	}
	collected := current.Return(map[string]Built{})
	for _, n := range names {
		n := n
		collected = current.Map2(collected, built[n], func(m map[string]Built, b Built) map[string]Built {
			out := make(map[string]Built, len(m)+1)
			for k, v := range m {
				out[k] = v
			}
			out[n] = b
			return out
		})
	}
	pub := current.Do(s.pubOp, current.Map(collected, func(m map[string]Built) publishIn { return publishIn{Builds: m} }))
	return current.Map(pub, func(Report) current.Unit { return current.Unit{} }).Named("base images")
}

// parentTerm is the opam image a compiler image goes on (nil for an opam image).
func parentTerm(built map[string]current.Term[Built], b Build) current.Term[*Built] {
	if b.Image.OCaml == "" {
		return current.Return[*Built](nil)
	}
	return current.Map(built[b.opam().Name()], func(p Built) *Built { return &p })
}
