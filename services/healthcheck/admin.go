package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AdminPath is the path of the admin API under the service's prefix.
const AdminPath = "/admin/"

// Status is what `kiln health-check status` shows.
type Status struct {
	Config *Config `json:"config"`
	// Current are the runs going on; Recent the latest finished ones, newest first.
	Current []Run `json:"current"`
	Recent  []Run `json:"recent"`
}

// Status returns the configuration and the runs.
func (s *Service) Status(ctx context.Context) (*Status, error) {
	cur, err := s.Store.Current(ctx)
	if err != nil {
		return nil, err
	}
	all, err := s.Store.Runs(ctx, "", 10)
	if err != nil {
		return nil, err
	}
	st := &Status{Config: s.Config(), Current: cur}
	for _, r := range all {
		if r.Status.Finished() {
			st.Recent = append(st.Recent, r)
		}
	}
	return st, nil
}

// AddSwitch adds a switch (or replaces the one of that name); the next run checks it.
func (s *Service) AddSwitch(sw Switch) (*Config, error) {
	return s.change(func(c *Config) error {
		for i := range c.Switches {
			if c.Switches[i].Name == sw.Name {
				c.Switches[i] = sw
				return nil
			}
		}
		c.Switches = append(c.Switches, sw)
		return nil
	})
}

// RemoveSwitch removes a switch; the runs that checked it keep its results.
func (s *Service) RemoveSwitch(name string) (*Config, error) {
	return s.change(func(c *Config) error {
		for i := range c.Switches {
			if c.Switches[i].Name == name {
				c.Switches = append(c.Switches[:i], c.Switches[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("no switch %q (the switches are %s)", name, strings.Join(c.SwitchNames(), ", "))
	})
}

// Settings are the keys Set knows, with what their values are.
var Settings = map[string]string{
	"versions":     "latest or all",
	"with-test":    "true or false",
	"lower-bounds": "true or false",
	"job-timeout":  "a duration, such as 90m",
	"interval":     "a duration (0: only runs asked for)",
	"parallelism":  "a number of builds",
	"retention":    "a number of runs",
	"retries":      "a number of tries",
}

// Set changes one setting of the configuration.
func (s *Service) Set(key, value string) (*Config, error) {
	return s.change(func(c *Config) error {
		var err error
		switch key {
		case "versions":
			c.Versions = value
		case "with-test":
			c.WithTest, err = strconv.ParseBool(value)
		case "lower-bounds":
			c.LowerBounds, err = strconv.ParseBool(value)
		case "job-timeout", "interval":
			var d time.Duration
			if d, err = time.ParseDuration(value); err == nil {
				if key == "interval" {
					c.Interval = Duration(d)
				} else {
					c.JobTimeout = Duration(d)
				}
			}
		case "parallelism", "retention", "retries":
			var n int
			if n, err = strconv.Atoi(value); err == nil {
				if n <= 0 && key != "retries" {
					return fmt.Errorf("%s %d: want a positive number", key, n)
				}
				switch key {
				case "parallelism":
					c.Parallelism = n
				case "retention":
					c.Retention = n
				default:
					c.Retries = n
				}
			}
		default:
			return fmt.Errorf("unknown setting %q (known: %s)", key, strings.Join(slices.Sorted(maps.Keys(Settings)), ", "))
		}
		if err != nil {
			return fmt.Errorf("%s %q: want %s", key, value, Settings[key])
		}
		return nil
	})
}

// change applies f to a copy of the configuration, checks it, saves it and puts it
// in force; a change that does not check leaves everything as it was.
func (s *Service) change(f func(*Config) error) (*Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.cfg
	c.Switches = append([]Switch(nil), s.cfg.Switches...)
	if err := f(&c); err != nil {
		return nil, err
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	if s.ConfigPath != "" {
		data, err := c.Marshal()
		if err != nil {
			return nil, err
		}
		tmp := s.ConfigPath + ".tmp"
		if err := os.MkdirAll(filepath.Dir(s.ConfigPath), 0o755); err != nil {
			return nil, fmt.Errorf("save the configuration: %w", err)
		}
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return nil, fmt.Errorf("save the configuration: %w", err)
		}
		if err := os.Rename(tmp, s.ConfigPath); err != nil {
			return nil, fmt.Errorf("save the configuration: %w", err)
		}
	}
	s.cfg = &c
	out := c
	return &out, nil
}

// AdminHandler serves the admin API under prefix+AdminPath; the host mounts it for
// admins only.
func (s *Service) AdminHandler(prefix string) http.Handler {
	mux := http.NewServeMux()
	p := strings.TrimRight(prefix, "/") + strings.TrimRight(AdminPath, "/")
	mux.HandleFunc("GET "+p+"/status", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) { return s.Status(r.Context()) })
	})
	mux.HandleFunc("GET "+p+"/run/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) {
			id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
			if err != nil {
				return nil, badRequest("run %q: want a run number", r.PathValue("id"))
			}
			return s.Store.Run(r.Context(), id)
		})
	})
	mux.HandleFunc("POST "+p+"/run", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) {
			var o RunOptions
			if err := decode(r, &o); err != nil {
				return nil, err
			}
			return s.StartRun(r.Context(), o)
		})
	})
	mux.HandleFunc("POST "+p+"/switch", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) {
			var sw Switch
			if err := decode(r, &sw); err != nil {
				return nil, err
			}
			return s.AddSwitch(sw)
		})
	})
	mux.HandleFunc("POST "+p+"/switch/remove", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) {
			var v struct{ Name string }
			if err := decode(r, &v); err != nil {
				return nil, err
			}
			return s.RemoveSwitch(v.Name)
		})
	})
	mux.HandleFunc("POST "+p+"/set", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) {
			var v struct{ Key, Value string }
			if err := decode(r, &v); err != nil {
				return nil, err
			}
			return s.Set(v.Key, v.Value)
		})
	})
	return mux
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

// answer writes f's value as JSON, or its error: 404 for a missing run, 500 for a
// failure of the store, 400 for anything wrong with the request.
func answer(w http.ResponseWriter, r *http.Request, f func() (any, error)) {
	v, err := f()
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusBadRequest
		var he *httpError
		switch {
		case errors.Is(err, ErrNoRun):
			code = http.StatusNotFound
		case errors.As(err, &he):
			code = he.code
		case strings.Contains(err.Error(), "health-check store"):
			code = http.StatusInternalServerError
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}
