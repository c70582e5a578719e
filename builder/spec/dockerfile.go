package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DockerfileOptions selects the Dockerfile dialect.
type DockerfileOptions struct {
	// BuildKit renders cache mounts and secrets as RUN --mount=type=cache|secret and the
	// step's network as RUN --network=host|none. Without it those are left out, as the
	// classic builder has no such flags.
	BuildKit bool
}

// Dockerfile renders the spec as an equivalent Dockerfile: nested builds become
// stages "FROM IMAGE AS NAME", the default shell and user are made explicit, and
// commands whose text a Dockerfile would reinterpret (several lines, a trailing
// backslash, heredoc markers) are written in exec form with the current shell.
// Excluded names of (copy … (exclude …)) cannot be said in a Dockerfile; see
// DockerIgnore.
func (s *Spec) Dockerfile(opts DockerfileOptions) string {
	var b strings.Builder
	renderStage(&b, s, "", opts)
	return b.String()
}

// DockerIgnore returns .dockerignore lines that exclude, anywhere in the context, the
// names listed in (exclude …) of copies from the context. It is only exact when every
// such copy excludes the same names.
func (s *Spec) DockerIgnore() string {
	var names []string
	var walk func(*Spec)
	walk = func(s *Spec) {
		for _, c := range s.Builds {
			walk(c.Spec)
		}
		for _, op := range s.Ops {
			if c, ok := op.(Copy); ok && c.FromBuild == "" {
				for _, e := range c.Exclude {
					if !slices.Contains(names, e) {
						names = append(names, e)
					}
				}
			}
		}
	}
	walk(s)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s\n**/%s\n", n, n)
	}
	return b.String()
}

func renderStage(b *strings.Builder, s *Spec, name string, opts DockerfileOptions) {
	for _, c := range s.Builds {
		renderStage(b, c.Spec, c.Name, opts)
		b.WriteByte('\n')
	}
	if name != "" {
		fmt.Fprintf(b, "FROM %s AS %s\n", s.From, name)
	} else {
		fmt.Fprintf(b, "FROM %s\n", s.From)
	}
	shell := DefaultShell
	user := User{}
	explicitShell := false
	for _, op := range s.Ops {
		if _, ok := op.(Comment); ok {
			continue
		}
		_, explicitShell = op.(Shell)
		break
	}
	if !explicitShell {
		fmt.Fprintf(b, "SHELL %s\n", jsonList(shell))
	}
	for _, op := range s.Ops {
		switch o := op.(type) {
		case Comment:
			for _, l := range strings.Split(o.Text, "\n") {
				fmt.Fprintf(b, "# %s\n", l)
			}
		case Workdir:
			fmt.Fprintf(b, "WORKDIR %s\n", o.Path)
		case Shell:
			shell = o.Args
			fmt.Fprintf(b, "SHELL %s\n", jsonList(shell))
		case Env:
			fmt.Fprintf(b, "ENV %s=%s\n", o.Name, dockerQuote(o.Value))
		case User:
			user = o
			if o.Name != "" {
				fmt.Fprintf(b, "USER %s\n", o.Name)
			} else {
				fmt.Fprintf(b, "USER %d:%d\n", o.UID, o.GID)
			}
		case Run:
			b.WriteString("RUN ")
			if opts.BuildKit {
				for _, m := range o.Secrets {
					b.WriteString(mountFlag("secret", m.ID, m.Target, user, m.BuildkitOptions))
				}
				for _, m := range o.Cache {
					b.WriteString(mountFlag("cache", m.ID, m.Target, user, m.BuildkitOptions))
				}
				if o.HostNetwork() {
					b.WriteString("--network=host ")
				} else {
					b.WriteString("--network=none ")
				}
			}
			if needsExecForm(o.Shell) {
				b.WriteString(jsonList(append(slices.Clone(shell), o.Shell)))
			} else {
				b.WriteString(strings.TrimSpace(o.Shell))
			}
			b.WriteByte('\n')
		case Copy:
			if len(o.Exclude) > 0 {
				fmt.Fprintf(b, "# excluded from the copy below (see .dockerignore): %s\n", strings.Join(o.Exclude, " "))
			}
			b.WriteString("COPY ")
			if !user.IsRoot() {
				if user.Name != "" {
					fmt.Fprintf(b, "--chown=%s ", user.Name)
				} else {
					fmt.Fprintf(b, "--chown=%d:%d ", user.UID, user.GID)
				}
			}
			if o.FromBuild != "" {
				fmt.Fprintf(b, "--from=%s ", o.FromBuild)
			}
			paths := append(slices.Clone(o.Src), o.Dst)
			plain := true
			for _, p := range paths {
				if p == "" || strings.ContainsAny(p, " \t\n\"'\\$[") {
					plain = false
				}
			}
			if plain {
				b.WriteString(strings.Join(paths, " "))
			} else {
				b.WriteString(jsonList(paths))
			}
			b.WriteByte('\n')
		}
	}
}

func mountFlag(kind, id, target string, user User, extra []Option) string {
	parts := []string{"--mount=type=" + kind, "id=" + id, "target=" + target}
	if user.Name == "" && !user.IsRoot() {
		parts = append(parts, "uid="+strconv.Itoa(user.UID), "gid="+strconv.Itoa(user.GID))
	}
	for _, o := range extra {
		parts = append(parts, o.Key+"="+o.Value)
	}
	return strings.Join(parts, ",") + " "
}

// needsExecForm reports whether a command cannot be written as shell-form RUN text
// without the Dockerfile parser changing it.
func needsExecForm(cmd string) bool {
	t := strings.TrimSpace(cmd)
	return t == "" || t != cmd || strings.ContainsAny(cmd, "\n\r") ||
		strings.HasSuffix(t, "\\") || strings.HasPrefix(t, "[") || strings.Contains(cmd, "<<")
}

func jsonList(xs []string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(xs)
	return strings.ReplaceAll(strings.TrimSpace(buf.String()), `","`, `", "`)
}

// dockerQuote quotes an ENV value so the Dockerfile parser yields it unchanged.
func dockerQuote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		switch r {
		case '"', '\\', '$':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString("\\\n")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
