package deployer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validConfig is a configuration whose secret files exist under dir.
func validConfig(t testing.TB, dir string) string {
	t.Helper()
	for _, f := range []string{"key", "known_hosts", "creds", "hook", "admin"} {
		content := "x\n"
		if f == "hook" {
			content = "https://hooks.example.org/x\n"
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return strings.NewReplacer("DIR", dir).Replace(`
poll: 10s
admin_token_file: DIR/admin
registry: {address: 127.0.0.1:5000, credentials_file: DIR/creds, insecure: true}
hosts:
  web1: {ssh: deploy@127.0.0.1:2222, key_file: DIR/key, known_hosts_file: DIR/known_hosts}
  here: {}
notify:
  - {name: ops, kind: slack, url_file: DIR/hook}
services:
  - name: web
    repo: https://example.org/web.git
    image: ocaml/web
    health: {path: /health, deadline: 20s}
    promote: confirm
    staging:
      host: here
      container:
        name: web-staging
        port: 8080
        slots: [18081, 18082]
        proxy: {upstream_file: /etc/nginx/web.conf, upstream: web, reload: [nginx, -s, reload], url: "http://127.0.0.1:8000"}
    production:
      host: web1
      swarm: {service: web, url: "http://127.0.0.1:80"}
`)
}

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	good := validConfig(t, dir)
	for _, tc := range []struct {
		name string
		edit func(string) string
		want []string // substrings of the error; none: valid
	}{
		{name: "valid", edit: func(s string) string { return s }},
		{name: "unknown key", edit: func(s string) string { return strings.Replace(s, "poll: 10s", "poll: 10s\npoll_every: 3s", 1) },
			want: []string{"line 3", "field poll_every not found"}},
		{name: "unknown key in a target", edit: func(s string) string { return strings.Replace(s, "port: 8080", "port: 8080\n        ports: 1", 1) },
			want: []string{"field ports not found"}},
		{name: "missing secret file", edit: func(s string) string { return strings.Replace(s, dir+"/creds", dir+"/absent", 1) },
			want: []string{"registry.credentials_file: open " + dir + "/absent: no such file or directory"}},
		{name: "missing ssh key", edit: func(s string) string { return strings.Replace(s, dir+"/key", dir+"/nokey", 1) },
			want: []string{"hosts.web1.key_file: open " + dir + "/nokey"}},
		{name: "no known_hosts", edit: func(s string) string { return strings.Replace(s, ", known_hosts_file: "+dir+"/known_hosts", "", 1) },
			want: []string{"hosts.web1: known_hosts_file missing (host keys are never trusted on first use)"}},
		{name: "unknown host", edit: func(s string) string { return strings.Replace(s, "host: web1", "host: web2", 1) },
			want: []string{`services.web.production.host: "web2" is not one of hosts`}},
		{name: "two methods", edit: func(s string) string {
			return strings.Replace(s, "swarm: {service: web", "command: {artifact: /a, dest: /b, run: [true]}\n      swarm: {service: web", 1)
		}, want: []string{"services.web.production: want exactly one of container, swarm, compose or command"}},
		{name: "compose", edit: func(s string) string {
			return strings.Replace(s, "swarm: {service: web, url: \"http://127.0.0.1:80\"}", "compose: {file: /srv/web/docker-compose.yml, service: web, url: \"http://127.0.0.1:80\"}", 1)
		}},
		{name: "compose without a file", edit: func(s string) string {
			return strings.Replace(s, "swarm: {service: web, url: \"http://127.0.0.1:80\"}", "compose: {service: web, url: \"http://127.0.0.1:80\"}", 1)
		},
			want: []string{"services.web.production.compose: file (an absolute path) and service are needed"}},
		{name: "retry attempts out of range", edit: func(s string) string { return "retry: {attempts: 50, backoff: 1s}\n" + s },
			want: []string{"retry.attempts: 50 is not between 1 and 20"}},
		{name: "bad duration", edit: func(s string) string { return strings.Replace(s, "deadline: 20s", "deadline: soon", 1) },
			want: []string{`"soon" is not a duration`}},
		{name: "bad promote", edit: func(s string) string { return strings.Replace(s, "promote: confirm", "promote: later", 1) },
			want: []string{`services.web.promote: "later": want auto, confirm or engine`}},
		{name: "several errors at once", edit: func(s string) string {
			return strings.Replace(strings.Replace(s, dir+"/hook", dir+"/nohook", 1), "image: ocaml/web", "", 1)
		}, want: []string{"notify[0]: url_file: open " + dir + "/nohook", "services.web.image: missing"}},
		{name: "empty", edit: func(string) string { return "" }, want: []string{"empty"}},
		{name: "a spec built for two architectures", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    spec: deploy.spec\n    archs: [amd64, arm64]\n    from: {arm64: kiln/debian:bookworm-arm64}\n    image_root: /image\n    image_config: {entrypoint: [/server]}", 1)
		}},
		{name: "a Dockerfile built for another architecture", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    archs: [amd64, arm64, arm64]", 1)
		}, want: []string{"services.web.archs: arm64: a Dockerfile builds only this machine's architecture", "services.web.archs: arm64 twice"}},
		{name: "a spec with an unknown architecture and a from of another", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    spec: deploy.spec\n    archs: [mips]\n    from: {arm64: x}\n    image_root: image", 1)
		}, want: []string{"services.web.archs: mips: not one of", "services.web.from: arm64 is not one of archs", `services.web.image_root: "image": want an absolute path`}},
		{name: "a spec and a Dockerfile", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    spec: deploy.spec\n    dockerfile: Dockerfile", 1)
		}, want: []string{"services.web: dockerfile and spec: give one"}},
		{name: "image settings without a spec", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    image_config: {entrypoint: [/server]}", 1)
		}, want: []string{"services.web: from, image_root and image_config are for a spec"}},
		{name: "empty image settings without a spec", edit: func(s string) string {
			return strings.Replace(s, "image: ocaml/web", "image: ocaml/web\n    image_config: {entrypoint: [], env: []}", 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.edit(good)))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.Services[0].Branch != "main" || c.Services[0].Dockerfile != "Dockerfile" && c.Services[0].Spec == "" || len(c.Services[0].Archs) == 0 || c.Services[0].Health.Deadline.Or(0) == 0 {
					t.Errorf("defaults not filled in: %+v", c.Services[0])
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "x\n") {
				t.Errorf("a secret file's content is in the error: %v", err)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(validConfig(f, f.TempDir())))
	f.Add([]byte("services: [{name: a, production: {container: {slots: [1]}}}]"))
	f.Add([]byte("hosts: {a: {ssh: '@:'}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseConfig(b) // must not panic
	})
}
