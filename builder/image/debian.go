package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMirror is the Debian mirror root filesystems come from.
const DefaultMirror = "http://deb.debian.org/debian"

// DebianOptions describes a Debian root filesystem made with mmdebstrap.
type DebianOptions struct {
	Suite    string   // e.g. bookworm (required)
	Arch     string   // Debian architecture (amd64, arm64, …); empty is the host's
	Variant  string   // mmdebstrap variant: minbase (default), apt, required, …
	Packages []string // extra packages to install
	Mirror   string   // empty is DefaultMirror
	// Name is the local name to register; empty derives one from the options:
	// kiln/debian:SUITE[-ARCH][-VARIANT][-<digest of the package list>].
	Name string
}

func (o DebianOptions) normalised() DebianOptions {
	if o.Arch == "" {
		o.Arch = debianArch(runtime.GOARCH)
	}
	if o.Variant == "" {
		o.Variant = "minbase"
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	pk := slices.Clone(o.Packages)
	slices.Sort(pk)
	o.Packages = slices.Compact(pk)
	return o
}

// debianArch maps a GOARCH name to Debian's.
func debianArch(goarch string) string {
	switch goarch {
	case "arm":
		return "armhf"
	case "386":
		return "i386"
	case "ppc64le":
		return "ppc64el"
	}
	return goarch
}

// goArch maps a Debian architecture name to GOARCH's.
func goArch(deb string) string {
	switch deb {
	case "armhf", "armel":
		return "arm"
	case "i386":
		return "386"
	case "ppc64el":
		return "ppc64le"
	}
	return deb
}

// hostFileHooks keep the build host's /etc/resolv.conf and /etc/hostname, which
// mmdebstrap copies in, out of the base: resolv.conf is left empty (steps without the
// network have no name servers; the sandbox mounts the host's for (network host)) and
// hostname is removed (the sandbox names its host).
var hostFileHooks = []string{
	`--customize-hook=: > "$1/etc/resolv.conf"`,
	`--customize-hook=rm -f "$1/etc/hostname"`,
}

// Args returns the mmdebstrap arguments (before the target) for the options.
func (o DebianOptions) Args() []string {
	o = o.normalised()
	args := []string{"--variant=" + o.Variant, "--architectures=" + o.Arch, "--format=tar"}
	args = append(args, hostFileHooks...)
	if len(o.Packages) > 0 {
		args = append(args, "--include="+strings.Join(o.Packages, ","))
	}
	return append(args, o.Suite)
}

// Recipe is a one-line description of what makes the root filesystem, which keys
// its default name.
func (o DebianOptions) Recipe() string {
	o = o.normalised()
	return "mmdebstrap " + strings.Join(o.Args(), " ") + " - " + o.Mirror
}

// LocalName returns the name the base is registered under.
func (o DebianOptions) LocalName() (string, error) {
	if o.Name != "" {
		return LocalName(o.Name)
	}
	n := o.normalised()
	tag := n.Suite
	if n.Arch != debianArch(runtime.GOARCH) {
		tag += "-" + n.Arch
	}
	if n.Variant != "minbase" {
		tag += "-" + n.Variant
	}
	if len(n.Packages) > 0 || n.Mirror != DefaultMirror {
		sum := sha256.Sum256([]byte(n.Recipe()))
		tag += "-" + hex.EncodeToString(sum[:5])
	}
	return LocalName("kiln/debian:" + tag)
}

// MakeDebian makes a Debian root filesystem with mmdebstrap (other architectures run
// under qemu-user-static through binfmt_misc) and registers it under o's name,
// replacing what the name pointed to.
func (s *Store) MakeDebian(ctx context.Context, o DebianOptions) (Base, error) {
	if o.Suite == "" {
		return Base{}, fmt.Errorf("debian base: no suite given (e.g. bookworm)")
	}
	name, err := o.LocalName()
	if err != nil {
		return Base{}, err
	}
	n := o.normalised()
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return Base{}, fmt.Errorf("debian base: mmdebstrap is not installed (apt-get install mmdebstrap)")
	}
	args := append(n.Args(), "-", n.Mirror)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	// mmdebstrap runs apt and dpkg as children: cancelling kills the whole group, so
	// none of them keeps the pipes open.
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Base{}, err
	}
	p := s.progress()
	errLog := &lineTail{line: p.Line}
	cmd.Stderr = errLog
	p.Line(fmt.Sprintf("making %s: %s", name, n.Recipe()))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Base{}, fmt.Errorf("debian base: %w", err)
	}
	cfg := Config{Env: []string{DefaultPath}, Workdir: "/", Arch: goArch(n.Arch)}
	b, ierr := s.install(ctx, name, name, refEntry{Recipe: n.Recipe()}, cfg, func(ctx context.Context, rootfs string) (string, int64, error) {
		return s.unpackStream(ctx, stdout, rootfs)
	})
	if ierr != nil {
		io.Copy(io.Discard, stdout)
	}
	werr := cmd.Wait()
	tail := errLog.last()
	if werr != nil {
		if ierr == nil {
			s.Remove(b.ID)
		}
		return Base{}, fmt.Errorf("debian base %s: mmdebstrap: %w\n%s", name, werr, strings.Join(tail, "\n"))
	}
	if ierr != nil {
		return Base{}, fmt.Errorf("debian base %s: %w", name, ierr)
	}
	p.Line(fmt.Sprintf("made %s (%s, %s) in %s", name, b.ID, humanBytes(b.Size), time.Since(start).Round(time.Second)))
	return b, nil
}

// EnsureDebian returns the Debian base named by o, making it first when the store
// lacks it or holds one made by another recipe (an earlier kiln's, say). Callers
// across processes wait for one another rather than build twice.
func (s *Store) EnsureDebian(ctx context.Context, o DebianOptions) (Base, error) {
	name, err := o.LocalName()
	if err != nil {
		return Base{}, err
	}
	if b, ok := s.currentDebian(ctx, name, o); ok {
		return b, nil
	}
	sum := sha256.Sum256([]byte(name))
	if err := os.MkdirAll(filepath.Join(s.root, "locks"), 0o700); err != nil {
		return Base{}, err
	}
	lockPath := filepath.Join(s.root, "locks", "make-"+hex.EncodeToString(sum[:8]))
	lf, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return Base{}, err
	}
	defer lf.Close()
	if err := flockContext(ctx, lf); err != nil {
		return Base{}, err
	}
	if b, ok := s.currentDebian(ctx, name, o); ok {
		return b, nil
	}
	if e, ok := s.lookupRef(name); ok {
		s.progress().Line(fmt.Sprintf("%s was made by another recipe (%q): making it again", name, e.Recipe))
	}
	return s.MakeDebian(ctx, o)
}

// currentDebian returns the base registered as name if o's recipe made it.
func (s *Store) currentDebian(ctx context.Context, name string, o DebianOptions) (Base, bool) {
	if e, ok := s.lookupRef(name); !ok || e.Recipe != o.Recipe() {
		return Base{}, false
	}
	b, err := s.Resolve(ctx, name)
	return b, err == nil
}

// flockContext takes an exclusive lock on f, giving up when ctx ends.
func flockContext(ctx context.Context, f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lineTail passes each line written to it on, and keeps the last 20.
type lineTail struct {
	line    func(string)
	partial []byte
	tail    []string
}

func (t *lineTail) Write(b []byte) (int, error) {
	data := append(t.partial, b...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		l := string(data[:i])
		t.line(l)
		t.tail = append(t.tail, l)
		if len(t.tail) > 20 {
			t.tail = t.tail[1:]
		}
		data = data[i+1:]
	}
	t.partial = append([]byte(nil), data...)
	return len(b), nil
}

func (t *lineTail) last() []string {
	if len(t.partial) > 0 {
		return append(t.tail, string(t.partial))
	}
	return t.tail
}
