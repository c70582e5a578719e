package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
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
	if !opts.BuildKit && s.needsBuildKit() {
		b.WriteString(classicNote)
	}
	r := &renderer{opts: opts}
	r.stage(&b, s, "")
	return b.String()
}

// classicNote heads a classic Dockerfile whose spec says what only BuildKit can.
const classicNote = `# Classic builder form: every step has the network (kiln gives it only to steps with
# (network host)); caches are plain directories of the image and secrets are not
# mounted (each such step says so). The BuildKit form keeps them all.
`

// needsBuildKit reports whether a run step of s or of its nested builds has a cache,
// a secret or no network, which the classic builder cannot say.
func (s *Spec) needsBuildKit() bool {
	for _, c := range s.Builds {
		if c.Spec.needsBuildKit() {
			return true
		}
	}
	for _, op := range s.Ops {
		if r, ok := op.(Run); ok && (len(r.Cache) > 0 || len(r.Secrets) > 0 || len(r.Tmpfs) > 0 || !r.HostNetwork()) {
			return true
		}
	}
	return false
}

// ReproduceNote is the comment block a build log starts with: the spec as a Dockerfile
// for the classic builder, where to find the BuildKit form, and how to load kiln's
// local bases (kiln/…) into Docker.
func (s *Spec) ReproduceNote() string {
	var b strings.Builder
	b.WriteString("# To reproduce locally, run `docker build` on this Dockerfile\n")
	b.WriteString("# (`kiln build --print-dockerfile --buildkit` prints the BuildKit form):\n")
	for _, l := range strings.Split(strings.TrimRight(s.Dockerfile(DockerfileOptions{}), "\n"), "\n") {
		b.WriteString("#   " + l + "\n")
	}
	for _, ref := range s.localBases() {
		fmt.Fprintf(&b, "# Load the local base %s into Docker first: kiln base export %s | docker load\n", ref, ref)
	}
	return b.String()
}

// localBases lists the kiln/… base references of s and its nested builds.
func (s *Spec) localBases() []string {
	var refs []string
	var walk func(*Spec)
	walk = func(s *Spec) {
		for _, c := range s.Builds {
			walk(c.Spec)
		}
		if strings.HasPrefix(s.From, "kiln/") && !slices.Contains(refs, s.From) {
			refs = append(refs, s.From)
		}
	}
	walk(s)
	return refs
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

// renderer writes Dockerfile stages; envArgs counts the build arguments that carry
// environment values with line breaks.
type renderer struct {
	opts    DockerfileOptions
	envArgs int
}

func (r *renderer) stage(b *strings.Builder, s *Spec, name string) {
	for _, c := range s.Builds {
		r.stage(b, c.Spec, c.Name)
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
			fmt.Fprintf(b, "WORKDIR %s\n", workdirWord(o.Path))
		case Shell:
			shell = o.Args
			fmt.Fprintf(b, "SHELL %s\n", jsonList(shell))
		case Env:
			r.env(b, o)
		case User:
			user = o
			if o.Name != "" {
				fmt.Fprintf(b, "USER %s\n", o.Name)
			} else {
				fmt.Fprintf(b, "USER %d:%d\n", o.UID, o.GID)
			}
		case Run:
			r.run(b, o, shell, user)
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
				if p == "" || strings.ContainsAny(p, "\"'\\$[") || strings.IndexFunc(p, unicode.IsSpace) >= 0 {
					plain = false
				}
			}
			if plain {
				b.WriteString(strings.Join(paths, " "))
			} else {
				// Docker expands variables and escapes in these paths, even in JSON form.
				for i, p := range paths {
					paths[i] = dockerWord(p)
				}
				b.WriteString(jsonList(paths))
			}
			b.WriteByte('\n')
		}
	}
}

// env writes (env K V). ENV cannot hold a line break (a backslash at the end of a line
// continues it), so such a value comes from a build argument given on the command line.
func (r *renderer) env(b *strings.Builder, o Env) {
	if !strings.ContainsAny(o.Value, "\n\r") {
		fmt.Fprintf(b, "ENV %s=%s\n", o.Name, dockerQuote(o.Value))
		return
	}
	r.envArgs++
	arg := fmt.Sprintf("KILN_ENV_%d", r.envArgs)
	fmt.Fprintf(b, "# The value of %s has line breaks, which ENV cannot write: build with\n", o.Name)
	fmt.Fprintf(b, "#   --build-arg %s=%s\n", arg, shellANSIQuote(o.Value))
	fmt.Fprintf(b, "ARG %s\n", arg)
	fmt.Fprintf(b, "ENV %s=\"${%s}\"\n", o.Name, arg)
}

func (r *renderer) run(b *strings.Builder, o Run, shell []string, user User) {
	if !r.opts.BuildKit {
		for _, m := range o.Secrets {
			fmt.Fprintf(b, "# BuildKit only: secret %s at %s is not mounted here\n", quoteAtom(m.ID), quoteAtom(m.Target))
		}
		for _, m := range o.Cache {
			fmt.Fprintf(b, "# BuildKit only: cache %s at %s is a plain directory here\n", quoteAtom(m.ID), quoteAtom(m.Target))
		}
		for _, d := range o.Tmpfs {
			fmt.Fprintf(b, "# BuildKit only: tmpfs at %s is a plain directory here\n", quoteAtom(d))
		}
	}
	b.WriteString("RUN ")
	if r.opts.BuildKit {
		for _, m := range o.Secrets {
			b.WriteString(mountFlag("secret", m.ID, m.Target, user, m.BuildkitOptions))
		}
		for _, m := range o.Cache {
			b.WriteString(mountFlag("cache", m.ID, m.Target, user, m.BuildkitOptions))
		}
		for _, d := range o.Tmpfs {
			b.WriteString(mountFlag("tmpfs", "", d, User{}, nil))
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
}

// mountFlag renders a --mount flag. Docker reads it in three passes, each undone
// here: the flag word (backslash escapes, quotes), CSV fields, then variable expansion
// and escapes of each value.
func mountFlag(kind, id, target string, user User, extra []Option) string {
	fields := []string{"type=" + kind, "id=" + dockerWord(id), "target=" + dockerWord(target)}
	if id == "" {
		fields = slices.Delete(fields, 1, 2)
	}
	if user.Name == "" && !user.IsRoot() {
		fields = append(fields, "uid="+strconv.Itoa(user.UID), "gid="+strconv.Itoa(user.GID))
	}
	for _, o := range extra {
		fields = append(fields, o.Key+"="+dockerWord(o.Value))
	}
	for i, f := range fields {
		if f != strings.TrimSpace(f) || strings.ContainsAny(f, ",\"\n\r") {
			fields[i] = `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
		}
	}
	var b strings.Builder
	b.WriteString("--mount=")
	for _, c := range strings.Join(fields, ",") {
		if c == '\\' || c == '"' || c == '\'' || unicode.IsSpace(c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte(' ')
	return b.String()
}

// dockerWord escapes s for the Dockerfile word processing of COPY paths, WORKDIR and
// mount values, which expands $VAR, reads quotes and drops backslashes.
func dockerWord(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '\\', '$', '"', '\'':
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// workdirWord renders a WORKDIR path, whose line Docker trims before its word
// processing: quoted when it has blanks at either end or characters to escape.
func workdirWord(p string) string {
	if p != strings.TrimSpace(p) || dockerWord(p) != p {
		return dockerQuote(p)
	}
	return p
}

// shellANSIQuote writes s as a bash $'…' string.
func shellANSIQuote(s string) string {
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// needsExecForm reports whether a command cannot be written as shell-form RUN text
// without the Dockerfile parser changing it.
func needsExecForm(cmd string) bool {
	t := strings.TrimSpace(cmd)
	return t == "" || t != cmd || strings.ContainsAny(cmd, "\n\r") ||
		strings.HasSuffix(t, "\\") || strings.HasPrefix(t, "[") || strings.Contains(cmd, "<<")
}

// jsonList writes xs as a JSON list, ", " between the elements.
func jsonList(xs []string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(x)
		parts[i] = strings.TrimSpace(buf.String())
	}
	return "[" + strings.Join(parts, ", ") + "]"
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
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
