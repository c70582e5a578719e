package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/services/host"
)

// standbyPage is what a standing-by serve process shows on every path but /healthz and /metrics.
var standbyPage = template.Must(template.New("standby").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>kiln: standing by</title></head>
<body><h1>Standing by</h1>
<p>This kiln serve process ({{.ID}}) stands by for the services {{.Services}}: another process runs them{{with .Active}}: <b>{{.ID}}</b> (PostgreSQL backend {{.PID}}){{end}}.
It takes over when that process's database connection ends.</p>
{{with .Err}}<p>Who is active could not be read: {{.}}</p>{{end}}
</body></html>
`))

// standbyStatus is what the standby page and /healthz report.
type standbyStatus struct {
	ID, Services string
	Active       *host.Holder
	Err          error
}

func standbyHandler(sb *host.Standby, id string, services []string, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	status := func(r *http.Request) standbyStatus {
		st := standbyStatus{ID: id, Services: strings.Join(services, ", ")}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if h, ok, err := sb.Active(ctx); err != nil {
			st.Err = err
		} else if ok {
			st.Active = &h
		}
		return st
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		st := status(r)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		switch {
		case st.Err != nil:
			fmt.Fprintf(w, "standby; active unknown: %v\n", st.Err)
		case st.Active != nil:
			fmt.Fprintf(w, "standby; active: %s\n", st.Active.ID)
		default:
			fmt.Fprintln(w, "standby; active: none (taking over)")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = standbyPage.Execute(w, status(r))
	})
	return mux
}

// activeHealthz answers /healthz of the console: this process runs its services.
func activeHealthz(sb *host.Standby) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if sb == nil {
			fmt.Fprintln(w, "ok")
			return
		}
		select {
		case <-sb.Lost():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "stopping: %v\n", sb.Err())
		default:
			fmt.Fprintln(w, "active")
		}
	})
}

// databaseFlag is the value of cmd's --database flag, "" when it has none.
func databaseFlag(cmd interface{ Flags() *pflag.FlagSet }) string {
	if f := cmd.Flags().Lookup("database"); f != nil {
		return f.Value.String()
	}
	return ""
}

// standbyID names this process to the others: its public address, else host and console address.
func standbyID(baseURL string, ln net.Listener) string {
	if baseURL != "" {
		return baseURL
	}
	h, _ := os.Hostname()
	return h + " " + ln.Addr().String()
}

// standbyUntilActive waits, when dbURL is a PostgreSQL URL, until this process holds
// its services' lock, answering on ln meanwhile with a standby page and a 503 /healthz
// naming the active process. It returns the lock (nil without PostgreSQL) and the
// listener for the console: ln, or a new one on the same address after standing by.
func standbyUntilActive(ctx context.Context, ln net.Listener, dbURL string, services []string, id string, log *slog.Logger, reg *prometheus.Registry) (*host.Standby, net.Listener, error) {
	if !database.IsPostgres(dbURL) {
		return nil, ln, nil
	}
	sb, err := host.OpenStandby(ctx, host.StandbyOptions{Database: dbURL, Services: services, ID: id, Logger: log, Register: reg})
	if err != nil {
		return nil, nil, err
	}
	hs := &http.Server{Handler: standbyHandler(sb, id, services, reg), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	err = sb.Acquire(ctx)
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutCtx) // closes ln
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		log.Warn("standby status page", "err", serr)
	}
	if err != nil {
		sb.Close()
		return nil, nil, err
	}
	active, err := net.Listen("tcp", ln.Addr().String())
	if err != nil {
		sb.Close()
		return nil, nil, fmt.Errorf("--listen %s after standing by: %w", ln.Addr(), err)
	}
	return sb, active, nil
}

// untilLost is ctx ended, with the lock's error as its cause, when sb loses its lock.
// The returned cancel must be called when the process stops.
func untilLost(ctx context.Context, sb *host.Standby) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	if sb == nil {
		return ctx, func() { cancel(nil) }
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-sb.Lost():
			cancel(sb.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil); <-done }
}
