package current

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/internal/database"
)

// Config configures an Engine. Zero fields take the documented defaults.
type Config struct {
	// StateDir holds the SQLite database and the job log files (default "./var").
	StateDir string
	// Database is where results, log rules and job records live: a postgres:// URL
	// or the path of a SQLite file (default DBPath). With PostgreSQL the job logs are
	// kept in the database too, so every engine using it can read them.
	Database string
	// DBPath is the SQLite database when Database is empty (default StateDir/kiln.db).
	DBPath string
	// Pools maps a pool name to its number of slots. Operations naming an unknown pool
	// run in a pool of DefaultPoolSlots slots made on first use.
	Pools map[string]int
	// DefaultPoolSlots is the size of pools not named in Pools (default 4).
	DefaultPoolSlots int
	// ConfirmLevel holds jobs whose level is above it until an operator confirms them
	// (zero: LevelDangerous, nothing is held).
	ConfirmLevel Level
	// AutoRelease, when positive, raises the confirm level to LevelDangerous this long
	// after Open, releasing every held job. Status shows when it happens.
	AutoRelease time.Duration
	// LogMaxAge deletes logs of jobs finished longer ago (0: keep).
	LogMaxAge time.Duration
	// LogMaxBytes deletes the oldest finished logs while all logs take more (0: no limit).
	LogMaxBytes int64
	// RetentionEvery is how often retention runs (default 10 minutes).
	RetentionEvery time.Duration
	// MaxRetries bounds the retries of infrastructure failures (default 3; -1: none).
	MaxRetries int
	// RetryBackoff is the first retry delay, doubled each time up to 1 minute (default 1s).
	RetryBackoff time.Duration
	// InterruptedGrace is how long a job interrupted by a restart waits to be wanted
	// again before it is finished as interrupted (default 10 minutes).
	InterruptedGrace time.Duration
	// Logger receives the engine's log (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.StateDir == "" {
		c.StateDir = "var"
	}
	if c.DBPath == "" {
		c.DBPath = filepath.Join(c.StateDir, "kiln.db")
	}
	if c.Database == "" {
		c.Database = c.DBPath
	}
	if c.DefaultPoolSlots <= 0 {
		c.DefaultPoolSlots = 4
	}
	if c.ConfirmLevel == 0 {
		c.ConfirmLevel = LevelDangerous
	}
	if c.RetentionEvery <= 0 {
		c.RetentionEvery = 10 * time.Minute
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Second
	}
	if c.InterruptedGrace <= 0 {
		c.InterruptedGrace = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Engine evaluates pipelines, runs their jobs and keeps their results.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	db      *store
	logs    logStore
	metrics *metrics
	started time.Time

	// Evaluation state, guarded by mu.
	mu         sync.Mutex
	nodes      map[int64]*node
	nextID     int64
	nextGroup  int64
	curGroup   *group
	queue      nodeQueue
	releases   []*node
	entRels    []*entry
	entries    map[entryKey]*entry
	lookups    map[entryKey]*lookup
	fresh      []*entry
	ops        map[string]*opDef
	root       *node
	pass       uint64
	recomputed uint64
	running    bool
	runCtx     context.Context
	lastPass   time.Time

	// Events from other goroutines, applied at the start of the next pass.
	qmu     sync.Mutex
	pending []func()
	wake    chan struct{}

	smu  sync.Mutex
	subs map[chan struct{}]struct{}

	// Jobs, guarded by jmu.
	jmu           sync.Mutex
	jobs          map[string]*runningJob
	parked        int // jobs put aside by Await
	confirmLevel  Level
	autoReleaseAt time.Time
	autoReleased  bool
	levelChanged  chan struct{}
	pools         map[string]*pool

	closeOnce sync.Once
	closeErr  error

	jobWG  sync.WaitGroup
	bgWG   sync.WaitGroup
	cancel context.CancelFunc
	bgCtx  context.Context
}

// Open opens (creating if needed) the state folder and database of an engine. It does
// not load cached results: they are read when a pipeline asks for them.
func Open(cfg Config) (*Engine, error) {
	if cfg.ConfirmLevel != 0 && (cfg.ConfirmLevel < LevelHarmless || cfg.ConfirmLevel > LevelDangerous) {
		return nil, invalid("engine config: confirm level %d out of range", int(cfg.ConfirmLevel))
	}
	for name, slots := range cfg.Pools {
		if slots < 1 {
			return nil, invalid("engine config: pool %q: %d slots (want at least 1)", name, slots)
		}
	}
	if cfg.LogMaxAge < 0 || cfg.LogMaxBytes < 0 {
		return nil, invalid("engine config: negative log retention limit")
	}
	cfg.defaults()
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("engine state folder: %w", err)
	}
	logs := filepath.Join(cfg.StateDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, fmt.Errorf("engine log folder: %w", err)
	}
	db, err := openStore(context.Background(), cfg.Database)
	if err != nil {
		return nil, err
	}
	var logStore logStore = &fileLogs{dir: logs}
	if db.db.Backend() == database.Postgres {
		logStore = &dbLogs{db: db.db}
	}
	n, err := db.markInterrupted()
	if err != nil {
		db.close()
		return nil, err
	}
	e := &Engine{
		cfg:          cfg,
		log:          cfg.Logger,
		db:           db,
		logs:         logStore,
		started:      time.Now(),
		nodes:        map[int64]*node{},
		entries:      map[entryKey]*entry{},
		lookups:      map[entryKey]*lookup{},
		ops:          map[string]*opDef{},
		wake:         make(chan struct{}, 1),
		subs:         map[chan struct{}]struct{}{},
		jobs:         map[string]*runningJob{},
		confirmLevel: cfg.ConfirmLevel,
		levelChanged: make(chan struct{}),
		pools:        map[string]*pool{},
	}
	e.metrics = newMetrics(e)
	for name, slots := range cfg.Pools {
		e.pools[name] = newPool(name, slots)
	}
	if n > 0 {
		e.log.Info("jobs interrupted by the last shutdown will run again when wanted", "jobs", n)
	}
	e.bgCtx, e.cancel = context.WithCancel(context.Background())
	if cfg.AutoRelease > 0 && cfg.ConfirmLevel < LevelDangerous {
		e.autoReleaseAt = e.started.Add(cfg.AutoRelease)
		e.bgWG.Add(1)
		go e.autoRelease()
	}
	e.bgWG.Add(1)
	go e.maintain()
	return e, nil
}

// Close stops the engine's background work and closes the database. Call it after Run
// has returned.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		e.bgWG.Wait()
		e.jobWG.Wait()
		e.closeErr = e.db.close()
	})
	return e.closeErr
}

// StateDir is the engine's state folder.
func (e *Engine) StateDir() string { return e.cfg.StateDir }

// ErrRunning is returned by Run when the engine already runs a pipeline.
var ErrRunning = errors.New("engine already runs a pipeline")

// Run evaluates the pipeline whose result is root until ctx is cancelled, re-evaluating
// the parts whose inputs change. Jobs still running when ctx ends are recorded as
// interrupted and run again when a later Run wants them.
func (e *Engine) Run(ctx context.Context, root AnyTerm) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return ErrRunning
	}
	e.running = true
	e.runCtx = ctx
	e.root = root.termNode()
	e.activate(e.root)
	e.passLocked()
	e.mu.Unlock()

	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			e.release(e.root)
			e.passLocked()
			e.root = nil
			e.mu.Unlock()
			e.jobWG.Wait()
			e.mu.Lock()
			e.applyPending()
			e.running = false
			e.mu.Unlock()
			e.notify()
			return nil
		case <-e.wake:
			e.mu.Lock()
			e.passLocked()
			e.mu.Unlock()
		}
	}
}

// post queues f to run, under the evaluation lock, at the start of the next pass.
func (e *Engine) post(f func()) {
	e.qmu.Lock()
	e.pending = append(e.pending, f)
	e.qmu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) applyPending() {
	e.qmu.Lock()
	fs := e.pending
	e.pending = nil
	e.qmu.Unlock()
	for _, f := range fs {
		f()
	}
}

// passLocked applies pending events, re-evaluates what changed and releases what is no
// longer used.
func (e *Engine) passLocked() {
	start := time.Now()
	e.applyPending()
	for {
		e.evaluate()
		if len(e.lookups) == 0 {
			break
		}
		e.loadLookups()
	}
	for _, ent := range e.fresh {
		if ent.refs == 0 && ent.job == nil {
			e.forget(ent) // its node went away before it was read
		}
	}
	e.fresh = e.fresh[:0]
	for len(e.releases) > 0 || len(e.entRels) > 0 {
		rels := e.releases
		e.releases = nil
		for _, n := range rels {
			e.deactivate(n)
		}
		ents := e.entRels
		e.entRels = nil
		for _, ent := range ents {
			e.unrefEntry(ent)
		}
	}
	e.pass++
	e.lastPass = time.Now()
	e.metrics.passSeconds.Observe(time.Since(start).Seconds())
	e.notify()
}

// Subscribe returns a channel that receives a value (coalesced) whenever the graph or
// the jobs change, and a function ending the subscription.
func (e *Engine) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.smu.Lock()
	e.subs[ch] = struct{}{}
	e.smu.Unlock()
	return ch, func() {
		e.smu.Lock()
		delete(e.subs, ch)
		e.smu.Unlock()
	}
}

func (e *Engine) notify() {
	e.smu.Lock()
	for ch := range e.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	e.smu.Unlock()
}

// maintain runs retention and finishes long-abandoned interrupted jobs.
func (e *Engine) maintain() {
	defer e.bgWG.Done()
	t := time.NewTicker(e.cfg.RetentionEvery)
	defer t.Stop()
	for {
		if _, err := e.EnforceRetention(); err != nil {
			e.log.Warn("log retention", "err", err)
		}
		e.finishAbandoned()
		select {
		case <-e.bgCtx.Done():
			return
		case <-t.C:
		}
	}
}

func (e *Engine) autoRelease() {
	defer e.bgWG.Done()
	t := time.NewTimer(time.Until(e.autoReleaseAt))
	defer t.Stop()
	select {
	case <-e.bgCtx.Done():
		return
	case <-t.C:
	}
	e.jmu.Lock()
	e.autoReleased = true
	e.jmu.Unlock()
	e.log.Warn("auto-release: confirm level raised to dangerous", "after", e.cfg.AutoRelease)
	e.SetConfirmLevel(LevelDangerous)
}
