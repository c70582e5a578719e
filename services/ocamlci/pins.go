package ocamlci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// pinnedPackages reads the opam file of each pin-depends package from its source, as
// opam does when pinning: NAME.opam or opam/NAME.opam, else opam, at the URL's #ref
// (default the remote's HEAD branch, main or master).
func pinnedPackages(ctx context.Context, mirrors *git.Mirrors, pins []PinDepend) ([]*repository.Package, error) {
	var out []*repository.Package
	for _, pin := range pins {
		pkg, ok := opam.ParsePackage(pin.Package)
		if !ok {
			return nil, fmt.Errorf("pin-depends: %q is not name.version", pin.Package)
		}
		remote, ref, _ := strings.Cut(strings.TrimPrefix(pin.URL, "git+"), "#")
		if !strings.HasPrefix(pin.URL, "git+") && !strings.HasSuffix(remote, ".git") && !strings.HasPrefix(remote, "/") {
			return nil, fmt.Errorf("pin-depends %s: only git sources (git+URL, URL.git or a path) are supported, not %q", pin.Package, git.Redact(pin.URL))
		}
		m, err := mirrors.Fetch(ctx, remote)
		if err != nil {
			return nil, fmt.Errorf("pin-depends %s: %w", pin.Package, err)
		}
		commit, err := pinCommit(ctx, m, ref)
		if err != nil {
			return nil, fmt.Errorf("pin-depends %s (%s): %w", pin.Package, git.Redact(pin.URL), err)
		}
		var data []byte
		var path string
		for _, path = range []string{string(pkg.Name) + ".opam", "opam/" + string(pkg.Name) + ".opam", "opam"} {
			data, err = m.ReadFile(ctx, commit, path)
			if err == nil || !errors.Is(err, fs.ErrNotExist) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("pin-depends %s: no opam file for %s at %s of %s: %w", pin.Package, pkg.Name, short(commit), git.Redact(remote), err)
		}
		f, err := opam.Parse(pin.Package+":"+path, data)
		if err != nil {
			return nil, fmt.Errorf("pin-depends %s: %w", pin.Package, err)
		}
		out = append(out, &repository.Package{Package: pkg, Path: path, Data: data, File: f})
	}
	return out, nil
}

func pinCommit(ctx context.Context, m *git.Repo, ref string) (string, error) {
	if ref != "" {
		if c, err := m.Resolve(ctx, ref); err == nil {
			return c, nil
		}
		return m.Resolve(ctx, "refs/heads/"+ref)
	}
	heads, err := m.Heads(ctx)
	if err != nil {
		return "", err
	}
	for _, b := range []string{"main", "master"} {
		if c := heads["refs/heads/"+b]; c != "" {
			return c, nil
		}
	}
	return "", errors.New("no #ref given and no main or master branch")
}
