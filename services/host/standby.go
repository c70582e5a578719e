package host

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// StandbyOptions configure a Standby.
type StandbyOptions struct {
	// Database is the PostgreSQL URL the services' state lives in.
	Database string
	// Services are the services run; processes running the same set compete for one lock.
	Services []string
	// ID names this process to the others (its console address, say); at most 50 bytes are kept.
	ID string
	// CheckEvery is how often the active process checks that its lock connection is alive
	// (default 2 s); a failed check ends its activity.
	CheckEvery time.Duration
	Logger     *slog.Logger
	// Register takes the kiln_serve_* metrics when not nil.
	Register prometheus.Registerer
}

// Holder is the process that holds a standby lock.
type Holder struct {
	ID  string `json:"id"`
	PID int    `json:"pid"` // the PostgreSQL backend of its lock connection
}

// Standby is the claim of one serve process to run a set of services on a shared
// database: a session-level advisory lock held on a connection of its own. One process
// holds it and is active; the others wait in Acquire and take over when the holder's
// connection ends (PostgreSQL then releases the lock).
type Standby struct {
	key  int64
	opts StandbyOptions
	log  *slog.Logger
	m    *standbyMetrics

	lockConn   *pgx.Conn
	statusMu   sync.Mutex
	statusConn *pgx.Conn

	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error
	stop     context.CancelFunc
	done     chan struct{}
}

type standbyMetrics struct {
	active prometheus.Gauge
	lost   prometheus.Counter
}

func newStandbyMetrics(reg prometheus.Registerer) *standbyMetrics {
	m := &standbyMetrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_serve_active", Help: "1 while this serve process holds its services' database lock and runs them, 0 while it stands by."}),
		lost:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_serve_lock_lost_total", Help: "Times the active serve process lost its database lock connection."}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.lost)
	}
	return m
}

// appNamePrefix marks the lock connections in pg_stat_activity.
const appNamePrefix = "kiln serve "

// StandbyKey is the advisory lock key of a set of services: the same for any order of
// the same names.
func StandbyKey(services []string) int64 {
	names := slices.Clone(services)
	slices.Sort(names)
	names = slices.Compact(names)
	h := fnv.New64a()
	h.Write([]byte("kiln serve\x00" + strings.Join(names, "\x00")))
	return int64(h.Sum64())
}

// OpenStandby connects to the database for the lock and for the status queries; it
// does not take the lock (Acquire does).
func OpenStandby(ctx context.Context, o StandbyOptions) (*Standby, error) {
	if len(o.Services) == 0 {
		return nil, errors.New("standby: no services named")
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.ID) > 50 {
		o.ID = o.ID[:50]
	}
	s := &Standby{key: StandbyKey(o.Services), opts: o, m: newStandbyMetrics(o.Register), lost: make(chan struct{}),
		log: o.Logger.With("part", "standby", "services", strings.Join(o.Services, ","))}
	var err error
	if s.lockConn, err = connectStandby(ctx, o.Database, appNamePrefix+o.ID); err != nil {
		return nil, fmt.Errorf("standby lock connection: %w", err)
	}
	if s.statusConn, err = connectStandby(ctx, o.Database, "kiln serve status"); err != nil {
		s.lockConn.Close(ctx)
		return nil, fmt.Errorf("standby status connection: %w", err)
	}
	return s, nil
}

func connectStandby(ctx context.Context, url, appName string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = appName
	// The server notices a holder whose machine vanished (no FIN) within about 25 s.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "10"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "5"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	return pgx.ConnectConfig(ctx, cfg)
}

// Active reports the process that holds the lock now; ok is false when none does.
func (s *Standby) Active(ctx context.Context) (h Holder, ok bool, err error) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	u := uint64(s.key)
	err = s.statusConn.QueryRow(ctx, `SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(u>>32), int64(u&0xffffffff)).Scan(&h.ID, &h.PID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("standby: who holds the lock: %w", err)
	}
	h.ID = strings.TrimPrefix(h.ID, appNamePrefix)
	return h, true, nil
}

// Acquire waits until this process holds the lock, logging who is active meanwhile;
// then it watches the lock connection until Close, closing Lost when it fails.
func (s *Standby) Acquire(ctx context.Context) error {
	if h, ok, err := s.Active(ctx); err == nil && ok {
		s.log.Info("standing by: another process runs these services", "active", h.ID, "active_backend", h.PID)
	}
	start := time.Now()
	if _, err := s.lockConn.Exec(ctx, "SELECT pg_advisory_lock($1)", s.key); err != nil {
		return fmt.Errorf("standby: wait for the lock of services %s: %w", strings.Join(s.opts.Services, ","), err)
	}
	s.m.active.Set(1)
	s.log.Info("active: holds the services' database lock", "waited", time.Since(start).Round(time.Millisecond))
	wctx, stop := context.WithCancel(context.Background())
	s.stop, s.done = stop, make(chan struct{})
	go s.watch(wctx)
	return nil
}

func (s *Standby) watch(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.opts.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*s.opts.CheckEvery+5*time.Second)
		err := s.lockConn.Ping(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.m.active.Set(0)
			s.m.lost.Inc()
			s.lostOnce.Do(func() {
				s.lostErr = fmt.Errorf("lost the database lock of services %s: %w", strings.Join(s.opts.Services, ","), err)
				close(s.lost)
			})
			s.log.Error("lost the database lock: another process may take over", "err", err)
			return
		}
	}
}

// Lost is closed when the lock connection of an active process fails: the lock may
// pass to another process, so this one must stop running the services.
func (s *Standby) Lost() <-chan struct{} { return s.lost }

// Err says why the lock was lost, once Lost is closed.
func (s *Standby) Err() error {
	select {
	case <-s.lost:
		return s.lostErr
	default:
		return nil
	}
}

// Close stops watching and closes the connections, which releases the lock.
func (s *Standby) Close() error {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	s.m.active.Set(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.lockConn.Close(ctx)
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	return errors.Join(err, s.statusConn.Close(ctx))
}
