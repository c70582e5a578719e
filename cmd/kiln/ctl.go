package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// ctlClient talks to the JSON API of a running console.
type ctlClient struct {
	base  *url.URL
	http  *http.Client
	token string
	csrf  string
	json  bool
	out   io.Writer
}

var ctlOpts struct {
	server, token, user string
	json                bool
}

func newCtlClient(cmd *cobra.Command) (*ctlClient, error) {
	base, err := url.Parse(strings.TrimRight(ctlOpts.server, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("--server %q: want a URL such as http://127.0.0.1:8080", ctlOpts.server)
	}
	jar, _ := cookiejar.New(nil)
	c := &ctlClient{base: base, http: &http.Client{Jar: jar}, token: ctlOpts.token, json: ctlOpts.json, out: cmd.OutOrStdout()}
	if c.token == "" && ctlOpts.user != "" {
		pw := os.Getenv("KILN_PASSWORD")
		if pw == "" {
			if pw, err = readPassword(ctlOpts.user); err != nil {
				return nil, err
			}
		}
		var res struct {
			Token string `json:"token"`
		}
		if err := c.do(cmd.Context(), "POST", "/api/login", nil, map[string]string{"user": ctlOpts.user, "password": pw}, &res); err != nil {
			return nil, fmt.Errorf("log in as %s: %w", ctlOpts.user, err)
		}
		c.token = res.Token
	}
	return c, nil
}

func readPassword(user string) (string, error) {
	fd := int(os.Stdin.Fd())
	fmt.Fprintf(os.Stderr, "password for %s: ", user)
	if term.IsTerminal(fd) {
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (c *ctlClient) url(path string, q url.Values) string {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	return u.String()
}

// request sends a request and returns the response if its status is 2xx.
func (c *ctlClient) request(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	if method == "POST" && c.token == "" && c.csrf == "" {
		var res struct {
			CSRF string `json:"csrf"`
		}
		if err := c.do(ctx, "GET", "/api/csrf", nil, nil, &res); err != nil {
			return nil, err
		}
		c.csrf = res.CSRF
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return resp, nil
}

// do sends a request and decodes its JSON answer into out (or prints it with --json).
func (c *ctlClient) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.json && path != "/api/csrf" && path != "/api/login" {
		_, err := c.out.Write(b)
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// ctlJob is the part of a job the commands print.
type ctlJob struct {
	ID          string    `json:"id"`
	Label       string    `json:"label"`
	Op          string    `json:"op"`
	Build       int       `json:"build"`
	State       string    `json:"state"`
	Why         string    `json:"why"`
	Message     string    `json:"message"`
	FailureKind string    `json:"failure_kind"`
	Live        bool      `json:"live"`
	Finished    time.Time `json:"finished"`
}

func printJobs(w io.Writer, jobs []ctlJob, why bool) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if why {
		fmt.Fprintln(tw, "ID\tSTATE\tLABEL\tWHY")
	} else {
		fmt.Fprintln(tw, "ID\tSTATE\tBUILD\tLIVE\tLABEL\tMESSAGE")
	}
	for _, j := range jobs {
		if why {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", j.ID, j.State, j.Label, j.Why)
			continue
		}
		msg := j.Message
		if j.FailureKind != "" && j.FailureKind != "work" {
			msg = "[" + j.FailureKind + "] " + msg
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%s\n", j.ID, j.State, j.Build, j.Live, j.Label, msg)
	}
	tw.Flush()
}

func ctlCommand() *cobra.Command {
	ctl := &cobra.Command{
		Use:   "ctl",
		Short: "Control a running kiln server: jobs, logs, cancel, rebuild, query, confirmation level",
	}
	server := os.Getenv("KILN_SERVER")
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	pf := ctl.PersistentFlags()
	pf.StringVar(&ctlOpts.server, "server", server, "URL of the kiln console (env KILN_SERVER)")
	pf.StringVar(&ctlOpts.token, "token", os.Getenv("KILN_TOKEN"), "bearer token, as printed by: kiln ctl login (env KILN_TOKEN)")
	pf.StringVar(&ctlOpts.user, "user", "", "log in as this user; the password comes from KILN_PASSWORD or the terminal")
	pf.BoolVar(&ctlOpts.json, "json", false, "print the server's JSON answers as they are")

	ctl.AddCommand(&cobra.Command{
		Use: "login", Short: "Log in (with --user) and print a token for --token / KILN_TOKEN", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ctlOpts.user == "" {
				return errors.New("login needs --user")
			}
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.out, c.token)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use: "jobs", Short: "List ready and running jobs and why each waits", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			var res struct {
				Jobs []ctlJob `json:"jobs"`
			}
			if err := c.do(cmd.Context(), "GET", "/api/jobs", nil, nil, &res); err != nil || c.json {
				return err
			}
			printJobs(c.out, res.Jobs, true)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use: "job ID", Short: "Show a job and the history of its key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			var res struct {
				Job     ctlJob   `json:"job"`
				History []ctlJob `json:"history"`
			}
			if err := c.do(cmd.Context(), "GET", "/api/job/"+url.PathEscape(args[0]), nil, nil, &res); err != nil || c.json {
				return err
			}
			j := res.Job
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			for _, kv := range [][2]string{
				{"job", j.ID}, {"label", j.Label}, {"op", j.Op}, {"build", strconv.Itoa(j.Build)}, {"state", j.State},
				{"why", j.Why}, {"failure", j.FailureKind}, {"message", j.Message}, {"live", strconv.FormatBool(j.Live)},
			} {
				if kv[1] != "" {
					fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
			}
			if !j.Finished.IsZero() {
				fmt.Fprintf(tw, "finished:\t%s\n", j.Finished.Format(time.RFC3339))
			}
			tw.Flush()
			fmt.Fprintln(c.out, "\nhistory of this key:")
			printJobs(c.out, res.History, false)
			return nil
		},
	})
	var follow bool
	logCmd := &cobra.Command{
		Use: "log ID", Short: "Print a job's log; --follow keeps printing until the job ends", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			return c.printLog(cmd.Context(), args[0], follow)
		},
	}
	logCmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing the log as it grows, until the job ends")
	ctl.AddCommand(logCmd)
	for _, a := range []struct{ name, short string }{
		{"cancel", "Cancel a job"}, {"rebuild", "Run a job's operation again and print the new job's id"},
		{"start", "Start a job now, skipping its pool queue or confirmation"},
	} {
		ctl.AddCommand(&cobra.Command{
			Use: a.name + " ID...", Short: a.short, Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := newCtlClient(cmd)
				if err != nil {
					return err
				}
				for _, id := range args {
					var res struct {
						Job string `json:"job"`
					}
					if err := c.do(cmd.Context(), "POST", "/api/job/"+url.PathEscape(id)+"/"+a.name, nil, struct{}{}, &res); err != nil {
						return err
					}
					if !c.json {
						fmt.Fprintln(c.out, res.Job)
					}
				}
				return nil
			},
		})
	}
	var q struct {
		op, state, key, since, until string
		limit                        int
		rebuild                      bool
	}
	query := &cobra.Command{
		Use: "query", Short: "List cached results matching a filter; --rebuild rebuilds them all", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			v := url.Values{}
			for k, s := range map[string]string{"op": q.op, "state": q.state, "key": q.key, "since": q.since, "until": q.until} {
				if s != "" {
					v.Set(k, s)
				}
			}
			v.Set("limit", strconv.Itoa(q.limit))
			var res struct {
				Results []ctlJob `json:"results"`
			}
			json := c.json
			c.json = json && !q.rebuild
			if err := c.do(cmd.Context(), "GET", "/api/query", v, nil, &res); err != nil || c.json {
				return err
			}
			c.json = json
			if !q.rebuild {
				printJobs(c.out, res.Results, false)
				return nil
			}
			if len(res.Results) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no result matches; nothing rebuilt")
				return nil
			}
			ids := make([]string, len(res.Results))
			for i, j := range res.Results {
				ids[i] = j.ID
			}
			var started struct {
				Jobs []string `json:"jobs"`
			}
			if err := c.do(cmd.Context(), "POST", "/api/query/rebuild", nil, map[string][]string{"ids": ids}, &started); err != nil || c.json {
				return err
			}
			for _, id := range started.Jobs {
				fmt.Fprintln(c.out, id)
			}
			return nil
		},
	}
	f := query.Flags()
	f.StringVar(&q.op, "op", "", "only results of this operation")
	f.StringVar(&q.state, "state", "", "only results in this state (ok, failed, cancelled, ...)")
	f.StringVar(&q.key, "key", "", "only results whose key or label contains this")
	f.StringVar(&q.since, "since", "", "only results ready since a time (RFC 3339) or a duration ago (24h)")
	f.StringVar(&q.until, "until", "", "only results ready before a time (RFC 3339) or a duration ago (1h)")
	f.IntVar(&q.limit, "limit", 100, "at most this many results")
	f.BoolVar(&q.rebuild, "rebuild", false, "rebuild every matching result")
	ctl.AddCommand(query)
	ctl.AddCommand(&cobra.Command{
		Use: "confirm [LEVEL]", Short: "Show the confirmation level, or set it (admin)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			var res struct {
				Level       string    `json:"level"`
				Levels      []string  `json:"levels"`
				AutoRelease time.Time `json:"auto_release"`
				Released    bool      `json:"released"`
			}
			if len(args) == 1 {
				err = c.do(cmd.Context(), "POST", "/api/confirm", nil, map[string]string{"level": args[0]}, &res)
			} else {
				err = c.do(cmd.Context(), "GET", "/api/confirm", nil, nil, &res)
			}
			if err != nil || c.json {
				return err
			}
			fmt.Fprintf(c.out, "level %s (levels: %s)\n", res.Level, strings.Join(res.Levels, " < "))
			if !res.AutoRelease.IsZero() {
				verb := "auto-release at"
				if res.Released {
					verb = "auto-released at"
				}
				fmt.Fprintf(c.out, "%s %s\n", verb, res.AutoRelease.Format(time.RFC3339))
			}
			return nil
		},
	})
	return ctl
}

func init() { addCommand(ctlCommand()) }

// printLog prints a job's log; with follow it streams the API's events until the job ends
// or the user interrupts.
func (c *ctlClient) printLog(ctx context.Context, id string, follow bool) error {
	path := "/api/job/" + url.PathEscape(id) + "/log"
	if !follow {
		var off int64
		for {
			resp, err := c.request(ctx, "GET", path, url.Values{"offset": {strconv.FormatInt(off, 10)}}, nil)
			if err != nil {
				return err
			}
			n, err := io.Copy(c.out, resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			next, _ := strconv.ParseInt(resp.Header.Get("X-Kiln-Log-Next"), 10, 64)
			if n == 0 || next <= off {
				return nil
			}
			off = next
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	var off int64
	for {
		done, next, err := c.followOnce(ctx, path+"/events", off)
		off = next
		if done || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kiln ctl: log stream broke (%v); reconnecting\n", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// followOnce reads one event stream of a log from off; it returns whether the job ended
// and the offset reached.
func (c *ctlClient) followOnce(ctx context.Context, path string, off int64) (bool, int64, error) {
	resp, err := c.request(ctx, "GET", path, url.Values{"offset": {strconv.FormatInt(off, 10)}}, nil)
	if err != nil {
		return false, off, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d struct {
				Next  int64  `json:"next"`
				Text  string `json:"text"`
				State string `json:"state"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				return false, off, fmt.Errorf("bad event: %w", err)
			}
			switch event {
			case "data":
				io.WriteString(c.out, d.Text)
				off = d.Next
			case "done":
				if d.State != "" {
					fmt.Fprintf(os.Stderr, "kiln ctl: job %s\n", d.State)
				}
				return true, off, nil
			case "failure":
				return true, off, errors.New(d.Error)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, off, err
	}
	return false, off, errors.New("stream ended early")
}
