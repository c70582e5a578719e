package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/services/deployer"
)

// deployerToken adds the deployer's admin token to every request.
type deployerToken struct {
	token string
	base  http.RoundTripper
}

func (t deployerToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(deployer.TokenHeader, t.token)
	return t.base.RoundTrip(r)
}

func deployCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "deploy",
		Short: "The deployer of a running kiln server: status, rollback, promote",
	}
	server := os.Getenv("KILN_SERVER")
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	var tokenFile string
	pf := c.PersistentFlags()
	pf.StringVar(&ctlOpts.server, "server", server, "URL of the kiln console (env KILN_SERVER)")
	pf.StringVar(&ctlOpts.token, "token", os.Getenv("KILN_TOKEN"), "console bearer token, as printed by: kiln ctl login (env KILN_TOKEN)")
	pf.StringVar(&ctlOpts.user, "user", "", "log in to the console as this user; the password comes from KILN_PASSWORD or the terminal")
	pf.BoolVar(&ctlOpts.json, "json", false, "print the server's JSON answers as they are")
	pf.StringVar(&tokenFile, "admin-token-file", "", "file holding the deployer's admin token, when its configuration sets one (rollback, promote need the console's admin role, and this token then)")

	admin := func(cmd *cobra.Command, path string, q url.Values) error {
		cl, err := newCtlClient(cmd)
		if err != nil {
			return err
		}
		if tokenFile != "" {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--admin-token-file: %w", err)
			}
			cl.http.Transport = deployerToken{token: strings.TrimSpace(string(b)), base: http.DefaultTransport}
		}
		var res struct {
			Result string `json:"result"`
		}
		if err := cl.do(cmd.Context(), "POST", path, q, nil, &res); err != nil {
			return err
		}
		if !ctlOpts.json {
			fmt.Fprintln(cl.out, res.Result)
		}
		return nil
	}
	c.AddCommand(&cobra.Command{
		Use: "status", Short: "What is live where, its health, the last failure", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := newCtlClient(cmd)
			if err != nil {
				return err
			}
			var st deployer.Status
			if err := cl.do(cmd.Context(), "GET", "/deployer/status.json", nil, nil, &st); err != nil || ctlOpts.json {
				return err
			}
			if st.ConfigError != "" {
				fmt.Fprintf(cl.out, "configuration not reloaded: %s\n\n", st.ConfigError)
			}
			tw := tabwriter.NewWriter(cl.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tSTAGE\tCOMMIT\tDIGEST\tSINCE\tHEALTH")
			for _, s := range st.Services {
				for _, g := range s.Stages {
					if g.Live == nil {
						fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\n", s.Name, g.Name)
						continue
					}
					health := "healthy"
					if !g.Live.Healthy {
						health = "unhealthy: " + g.Live.Check
					}
					fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\t%s\n", s.Name, g.Name, g.Live.Commit, g.Live.Digest, g.Live.Since.Format("2006-01-02 15:04"), health)
				}
			}
			tw.Flush()
			for _, s := range st.Services {
				if s.Pending != nil {
					fmt.Fprintf(cl.out, "%s: %.12s waits for promotion (kiln deploy promote %s)\n", s.Name, s.Pending.Commit, s.Name)
				}
				if f := s.LastFailure; f != nil {
					log := ""
					if f.Job != "" {
						log = " (its log: kiln ctl log " + f.Job + ")"
					}
					fmt.Fprintf(cl.out, "%s: last failure: %s %.12s %s at %s: %s%s\n", s.Name, f.Stage, f.Commit, f.Outcome, f.Finished.Format("2006-01-02 15:04"), f.Message, log)
				}
			}
			return nil
		},
	})
	var stage string
	rollback := &cobra.Command{
		Use: "rollback SERVICE DIGEST", Short: "Deploy a digest that was live before (health-checked)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return admin(cmd, "/deployer/"+url.PathEscape(args[0])+"/rollback", url.Values{"stage": {stage}, "digest": {args[1]}})
		},
	}
	rollback.Flags().StringVar(&stage, "stage", "production", "staging or production")
	c.AddCommand(rollback)
	c.AddCommand(&cobra.Command{
		Use: "promote SERVICE", Short: "Promote what passed staging to production", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return admin(cmd, "/deployer/"+url.PathEscape(args[0])+"/promote", nil)
		},
	})
	return c
}

func init() { addCommand(deployCommand()) }
