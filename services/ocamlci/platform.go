package ocamlci

import (
	"fmt"
	"path"
	"sort"

	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Select applies a repository's platform selection to the server's matrix: the
// default platforms and the added optional ones, less the skipped. A name or pattern
// that matches no platform is an error listing the known names.
func Select(all []matrix.Platform, sel PlatformSelection) ([]matrix.Platform, error) {
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = p.Name
	}
	sort.Strings(names)
	matches := func(pat string) ([]bool, error) {
		hit := make([]bool, len(all))
		any := false
		for i, p := range all {
			if ok, _ := path.Match(pat, p.Name); ok {
				hit[i], any = true, true
			}
		}
		if !any {
			return nil, &ConfigError{Msg: fmt.Sprintf("platforms: %q matches no platform (known: %v)", pat, names)}
		}
		return hit, nil
	}
	want := make([]bool, len(all))
	for i, p := range all {
		want[i] = !p.Optional
	}
	for _, pat := range sel.Add {
		hit, err := matches(pat)
		if err != nil {
			return nil, err
		}
		for i := range hit {
			want[i] = want[i] || hit[i]
		}
	}
	for _, pat := range sel.Skip {
		hit, err := matches(pat)
		if err != nil {
			return nil, err
		}
		for i := range hit {
			want[i] = want[i] && !hit[i]
		}
	}
	var out []matrix.Platform
	for i, p := range all {
		if want[i] {
			out = append(out, p)
		}
	}
	return out, nil
}
