package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Handler serves the fleet's state as JSON for a web console, to be mounted under a
// prefix such as /api/fleet/ (with http.StripPrefix):
//
//	GET pools               []PoolInfo
//	GET workers             []WorkerInfo
//	GET queue/{pool}?limit= QueueInfo (position, estimated start, why each job waits)
//	GET jobs/{id}           Job
//	GET jobs/{id}/log?offset=N   log bytes from offset N (text/plain; X-Log-Offset is the next offset)
func Handler(c *Client) http.Handler {
	mux := http.NewServeMux()
	send := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			status := http.StatusBadGateway
			var re *RemoteError
			if errors.As(err, &re) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /pools", func(w http.ResponseWriter, r *http.Request) {
		v, err := c.Pools(r.Context())
		send(w, v, err)
	})
	mux.HandleFunc("GET /workers", func(w http.ResponseWriter, r *http.Request) {
		v, err := c.Workers(r.Context())
		send(w, v, err)
	})
	mux.HandleFunc("GET /queue/{pool}", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		v, err := c.Queue(r.Context(), r.PathValue("pool"), limit)
		send(w, v, err)
	})
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !validName(r.PathValue("id")) {
			http.Error(w, "bad job id", http.StatusBadRequest)
			return
		}
		j, err := c.Job(r.Context(), r.PathValue("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		send(w, j, nil)
	})
	mux.HandleFunc("GET /jobs/{id}/log", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !validName(id) {
			http.Error(w, "bad job id", http.StatusBadRequest)
			return
		}
		off, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		var buf bytes.Buffer
		next, err := c.Log(r.Context(), id, max(off, 0), false, &buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Log-Offset", strconv.FormatInt(next, 10))
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		_, _ = w.Write(buf.Bytes())
	})
	return mux
}
