package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Status is the public state of the deployer: what the status page and its JSON show.
type Status struct {
	ConfigError string          `json:"config_error,omitempty"`
	Services    []ServiceStatus `json:"services"`
}

// ServiceStatus is one service: what is live where, the last failure, recent deploys.
type ServiceStatus struct {
	Name        string        `json:"name"`
	Repo        string        `json:"repo"`
	Branch      string        `json:"branch"`
	Stages      []StageStatus `json:"stages"`
	Pending     *Pending      `json:"pending_promotion,omitempty"`
	LastFailure *Record       `json:"last_failure,omitempty"`
	Refs        []RefStatus   `json:"refs"`
	History     []Record      `json:"history"`
}

// StageStatus is what runs on one stage of a service.
type StageStatus struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Mode string `json:"mode"`
	Live *Live  `json:"live,omitempty"`
}

// RefStatus is a branch or pull request and whether its head is deployable.
type RefStatus struct {
	Ref     string `json:"ref"`
	Commit  string `json:"commit"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Job is the engine job of the commit's build.
	Job string `json:"job,omitempty"`
}

// Status returns the state of every configured service.
func (d *Deployer) Status() Status {
	d.mu.Lock()
	cfg, cerr := d.cfg, d.cfgErr
	d.mu.Unlock()
	var st Status
	if cerr != nil {
		st.ConfigError = cerr.Error()
	}
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		snap := d.st.snapshot(svc.Name)
		ss := ServiceStatus{Name: svc.Name, Repo: svc.Repo, Branch: svc.Branch, Pending: snap.Pending, History: d.st.history(svc.Name)}
		if len(ss.History) > 50 {
			ss.History = ss.History[:50]
		}
		for _, r := range ss.History {
			if r.Outcome == OutcomeFailed || r.Outcome == OutcomeRolledBack {
				r := r
				ss.LastFailure = &r
				break
			}
		}
		for _, name := range []string{"staging", "production"} {
			t := &svc.Production
			if name == "staging" {
				if svc.Staging == nil {
					continue
				}
				t = svc.Staging
			}
			ss.Stages = append(ss.Stages, StageStatus{Name: name, Host: t.Host, Mode: t.mode(), Live: snap.Live[name]})
		}
		for ref, commit := range snap.Refs {
			rs := RefStatus{Ref: ref, Commit: commit, State: "queued"}
			if b := snap.Builds[commit]; b != nil {
				rs.State, rs.Message, rs.Job = string(b.State), firstLine(b.Message), b.Job
			}
			ss.Refs = append(ss.Refs, rs)
		}
		slices.SortFunc(ss.Refs, func(a, b RefStatus) int { return strings.Compare(a.Ref, b.Ref) })
		st.Services = append(st.Services, ss)
	}
	return st
}

func (t *Target) mode() string {
	switch {
	case t.Container != nil:
		return "container behind proxy"
	case t.Swarm != nil:
		return "swarm service"
	case t.Command != nil:
		return "command"
	}
	return ""
}

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": short,
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"dur": func(r Record) string {
		if r.Finished.IsZero() {
			return ""
		}
		return r.Finished.Sub(r.Started).Round(100 * time.Millisecond).String()
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Deployments</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
.live,.passed,.healthy{color:#17702a}.failed,.rolled-back,.unhealthy{color:#b00020}.running,.queued{color:#946200}
code{font-size:90%}.err{background:#fee;padding:.5em;border:1px solid #b00020}
form{display:inline}
</style><script src="/deployer/deployer.js" defer></script></head><body>
<h1>Deployments</h1>
<p id="admin-result" role="status"></p>
{{if .ConfigError}}<p class="err" id="config-error">The configuration file is invalid; the previous one stays in force: {{.ConfigError}}</p>{{end}}
{{range .Services}}{{$svc := .Name}}<section class="service" id="service-{{.Name}}">
<h2>{{.Name}}</h2>
<p>{{.Repo}}, branch <code>{{.Branch}}</code></p>
<table class="stages"><tr><th>stage</th><th>where</th><th>live commit</th><th>digest</th><th>deployed</th><th>health now</th></tr>
{{range .Stages}}<tr class="stage" data-stage="{{.Name}}"><td>{{.Name}}</td><td>{{.Host}} ({{.Mode}})</td>
{{with .Live}}<td><code class="commit">{{short .Commit}}</code></td><td><code class="digest">{{.Digest}}</code></td><td>{{ago .Since}}</td>
<td class="health {{if .Healthy}}healthy{{else}}unhealthy{{end}}" title="{{.Check}}">{{if .Healthy}}healthy{{else}}unhealthy{{end}} (checked {{ago .CheckedAt}}{{with .CheckJob}}, <a class="job" href="/job/{{.}}">job</a>{{end}})</td>
{{else}}<td colspan="4">nothing deployed</td>{{end}}</tr>
{{end}}</table>
{{with .Pending}}<p class="pending">{{short .Commit}} passed staging and waits for promotion ({{.Digest}}).
<form data-admin method="post" action="/deployer/{{$svc}}/promote"><input type="password" name="token" placeholder="admin token, if set" size="10"><button>Promote to production</button></form></p>{{end}}
{{with .LastFailure}}<p class="last-failure">Last failure: {{.Stage}} <code>{{short .Commit}}</code> {{.Outcome}} {{ago .Finished}}: <code>{{.Message}}</code></p>{{end}}
<h3>Branches and pull requests</h3>
<table class="refs"><tr><th>ref</th><th>commit</th><th>deployable</th></tr>
{{range .Refs}}<tr><td>{{.Ref}}</td><td><code>{{short .Commit}}</code></td><td class="{{.State}}" title="{{.Message}}">{{if or (eq .State "passed") (eq .State "failed")}}<a href="{{if .Job}}/job/{{.Job}}{{else}}/deployer/{{$svc}}/build/{{.Commit}}{{end}}">{{.State}}</a>{{else}}{{.State}}{{end}}</td></tr>{{end}}
</table>
<h3>History</h3>
<table class="history"><tr><th>#</th><th>stage</th><th>kind</th><th>commit</th><th>digest</th><th>started</th><th>took</th><th>outcome</th><th></th></tr>
{{range .History}}<tr class="record" data-outcome="{{.Outcome}}"><td>{{.ID}}</td><td>{{.Stage}}</td><td>{{.Kind}}{{with .By}} by {{.}}{{end}}</td><td><code>{{short .Commit}}</code></td><td><code>{{.Digest}}</code></td>
<td>{{.Started.Format "2006-01-02 15:04:05"}}</td><td>{{dur .}}</td><td class="{{.Outcome}}" title="{{.Message}}">{{if .Job}}<a class="job" href="/job/{{.Job}}">{{.Outcome}}</a>{{else}}{{.Outcome}}{{end}}{{with .Infrastructure}} <span class="infra">({{.}}{{end}}{{if gt .Attempts 1}}, {{.Attempts}} attempts{{end}}{{if .Infrastructure}})</span>{{end}}</td>
<td>{{if and .Digest (or (eq .Outcome "live") (eq .Outcome "replaced"))}}<form data-admin method="post" action="/deployer/{{.Service}}/rollback"><input type="hidden" name="stage" value="{{.Stage}}"><input type="hidden" name="digest" value="{{.Digest}}"><input type="password" name="token" placeholder="admin token, if set" size="10"><button>Roll back to this</button></form>{{end}}</td></tr>{{end}}
</table></section>
{{end}}
</body></html>
`))

// adminJS posts the admin forms with the console's CSRF token (when there is a console)
// and shows the answer.
const adminJS = `document.addEventListener('submit', async (e) => {
  const f = e.target;
  if (!f.matches('form[data-admin]')) return;
  e.preventDefault();
  const out = document.getElementById('admin-result');
  out.textContent = 'working…';
  let tok = '';
  try { tok = (await (await fetch('/api/csrf', {credentials: 'same-origin'})).json()).csrf; } catch (_) {}
  const r = await fetch(f.action, {method: 'POST', credentials: 'same-origin',
    headers: {'X-CSRF-Token': tok, 'Content-Type': 'application/x-www-form-urlencoded'},
    body: new URLSearchParams(new FormData(f))});
  let msg = (await r.text()).trim();
  try { msg = JSON.parse(msg).error || msg; } catch (_) {}
  if (r.ok) { location.reload(); } else { out.textContent = 'failed: ' + msg; }
});
`

// Routes are the deployer's pages: the status page, its JSON and the build logs.
func (d *Deployer) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /deployer":             http.HandlerFunc(d.serveStatus),
		"GET /deployer/status.json": http.HandlerFunc(d.serveJSON),
		"GET /deployer/deployer.js": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Write([]byte(adminJS))
		}),
		"GET /deployer/{service}/build/{commit}": http.HandlerFunc(d.serveBuildLog),
	}
}

// AdminRoutes are the admin actions, for the console to let only its admins use; when
// admin_token_file is configured they need its token as well.
func (d *Deployer) AdminRoutes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /deployer/{service}/rollback": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.admin(w, r, "rollback", func(by string) error {
				return d.Rollback(context.WithoutCancel(r.Context()), r.PathValue("service"), r.FormValue("stage"), r.FormValue("digest"), by)
			})
		}),
		"POST /deployer/{service}/promote": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.admin(w, r, "promote", func(by string) error {
				return d.Promote(context.WithoutCancel(r.Context()), r.PathValue("service"), by)
			})
		}),
	}
}

func (d *Deployer) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	st := d.Status()
	if err := page.Execute(w, st); err != nil {
		d.log.Error("deployer: status page", "err", err)
	}
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{40,64}$`)

// serveBuildLog serves the log of a commit's build.
func (d *Deployer) serveBuildLog(w http.ResponseWriter, r *http.Request) {
	svc, commit := r.PathValue("service"), r.PathValue("commit")
	if !nameRE.MatchString(svc) || !hexRE.MatchString(commit) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(d.o.StateDir, "logs", svc+"-"+commit+".log"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.Copy(w, f)
}

func (d *Deployer) serveJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(d.Status())
}

// TokenHeader carries the deployer's admin token (the Authorization header is the
// console's).
const TokenHeader = "X-Deployer-Token"

// admin runs an admin action: the token comes in TokenHeader or a form field. The
// action runs to its end (health check included) before the answer, and is not
// cancelled if the client goes away.
func (d *Deployer) admin(w http.ResponseWriter, r *http.Request, what string, f func(by string) error) {
	tok := r.Header.Get(TokenHeader)
	if tok == "" {
		tok = r.FormValue("token")
	}
	if err := d.Admin(tok); err != nil {
		status := http.StatusForbidden
		if !errors.Is(err, ErrForbidden) {
			status = http.StatusInternalServerError
		}
		answer(w, status, map[string]string{"error": what + ": " + err.Error()})
		return
	}
	d.log.Info("deployer: admin action", "action", what, "service", r.PathValue("service"), "from", r.RemoteAddr)
	if err := f("admin"); err != nil {
		answer(w, http.StatusConflict, map[string]string{"error": what + ": " + err.Error()})
		return
	}
	answer(w, http.StatusOK, map[string]string{"result": what + " done"})
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
