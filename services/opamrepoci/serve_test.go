package opamrepoci

import (
	"fmt"
	"strings"
	"testing"
)

func TestRepoFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		values   []string
		git      string // the plain git repositories, as owner/name=remote
		followed string
		err      string
	}{
		{"plain git", []string{"me/opam=/srv/opam.git"}, "[me/opam=/srv/opam.git]", "[git/me/opam]", ""},
		{"a repository of a forge", []string{"github/ocaml/opam-repository"}, "[]", "[github/ocaml/opam-repository]", ""},
		{"a URL with = in it", []string{"me/opam=https://h/x?a=b"}, "[me/opam=https://h/x?a=b]", "[git/me/opam]", ""},
		{"no remote", []string{"me/opam="}, "", "", "want OWNER/NAME=GIT-URL or FORGE/OWNER/NAME"},
		{"owner/name without a forge", []string{"ocaml/opam-repository"}, "", "", "want OWNER/NAME=GIT-URL or FORGE/OWNER/NAME"},
		{"empty part", []string{"github//opam"}, "", "", "want OWNER/NAME=GIT-URL or FORGE/OWNER/NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			git, followed, err := repoFlags(tc.values)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gs, fs []string
			for _, g := range git {
				gs = append(gs, g.Owner+"/"+g.Name+"="+g.Remote)
			}
			for _, f := range followed {
				fs = append(fs, f.String())
			}
			if fmt.Sprint(gs) != tc.git && !(len(gs) == 0 && tc.git == "[]") || fmt.Sprint(fs) != tc.followed {
				t.Errorf("git %v followed %v, want %s %s", gs, fs, tc.git, tc.followed)
			}
		})
	}
}
