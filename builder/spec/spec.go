// Package spec is the OBuilder build specification language: S-expression specs as
// OBuilder and the OCaml CI services write them, their parser, a printer, and a
// rendering as an equivalent Dockerfile.
package spec

// DefaultShell is the shell a (run …) step uses until a (shell …) op changes it.
var DefaultShell = []string{"/bin/bash", "-c"}

// DefaultWorkdir is the working directory until a (workdir …) op changes it.
const DefaultWorkdir = "/"

// Spec is one build: optional nested builds, a base image and the ops applied to it in
// order.
type Spec struct {
	// Builds are the nested (build NAME …) stages, in order; a later stage and the
	// main one may copy from an earlier one with (copy (from (build NAME)) …).
	Builds []Build
	// From is the base image reference of (from REF).
	From string
	// Ops are the operations after (from …), in order.
	Ops []Op
}

// Build is a named nested build: (build NAME SPEC).
type Build struct {
	Name string
	Spec *Spec
}

// Op is one operation of a spec: Comment, Workdir, Shell, Run, Copy, User or Env.
type Op interface {
	// Keyword is the op's name in the spec language ("run", "copy", …).
	Keyword() string
}

// Comment is (comment TEXT): a note shown in logs, with no effect on the build.
type Comment struct{ Text string }

// Workdir is (workdir PATH): the directory later steps run in; a relative path is
// taken relative to the previous one.
type Workdir struct{ Path string }

// Shell is (shell ARG…): the command prefix for later (run (shell CMD)) steps; the
// command runs as ARG… CMD.
type Shell struct{ Args []string }

// Run is (run (cache …) (network …) (secrets …) (tmpfs PATH …) (shell CMD)).
type Run struct {
	// Shell is the command, given to the current shell as its last argument.
	Shell string
	// Cache lists the persistent named caches mounted for the step.
	Cache []Cache
	// Network lists the networks the step joins; only "host" is known. Empty means
	// no network at all.
	Network []string
	// Secrets lists secrets mounted read-only as files for the step only.
	Secrets []Secret
	// Tmpfs lists directories that are empty in-memory file systems for the step
	// only; nothing written there is kept.
	Tmpfs []string
}

// Cache is one (NAME (target PATH)) entry of (cache …): a persistent directory shared
// between builds, mounted at Target.
type Cache struct {
	ID     string
	Target string
	// BuildkitOptions are extra --mount options for the Dockerfile rendering
	// ((buildkit_options ((K V) …)) in the spec); they do not change the build.
	BuildkitOptions []Option
}

// Secret is one (ID (target PATH)) entry of (secrets …): the secret ID's value as a
// read-only file at Target.
type Secret struct {
	ID     string
	Target string
	// BuildkitOptions are extra --mount options for the Dockerfile rendering.
	BuildkitOptions []Option
}

// Option is a key/value pair of buildkit_options.
type Option struct{ Key, Value string }

// Copy is (copy (from …) (src SRC…) (dst DST) (exclude NAME…)).
type Copy struct {
	// FromBuild names the nested build whose root filesystem is the source; empty
	// means the build context directory.
	FromBuild string
	// Src lists the source paths ('/' separated, relative to the source root).
	Src []string
	// Dst is the destination; relative to the workdir unless absolute. Ending in '/'
	// copies each source into the directory; otherwise the single source becomes Dst.
	Dst string
	// Exclude lists base names skipped while copying.
	Exclude []string
}

// User is (user (uid N) (gid N)), or (user (name NAME)) on systems with named users.
type User struct {
	UID, GID int
	// Name is set for (user (name NAME)); UID and GID are then unused.
	Name string
}

// Env is (env NAME VALUE): sets a variable for later steps.
type Env struct{ Name, Value string }

func (Comment) Keyword() string { return "comment" }
func (Workdir) Keyword() string { return "workdir" }
func (Shell) Keyword() string   { return "shell" }
func (Run) Keyword() string     { return "run" }
func (Copy) Keyword() string    { return "copy" }
func (User) Keyword() string    { return "user" }
func (Env) Keyword() string     { return "env" }

// IsRoot reports whether u is the root user (uid 0, gid 0).
func (u User) IsRoot() bool { return u.Name == "" && u.UID == 0 && u.GID == 0 }

// HostNetwork reports whether the step asks for the host's network.
func (r Run) HostNetwork() bool {
	for _, n := range r.Network {
		if n == "host" {
			return true
		}
	}
	return false
}
