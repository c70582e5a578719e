package opamrepoci

import (
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder/spec"
)

func TestSpec(t *testing.T) {
	cfg, err := Parse("sample.yml", []byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	s := &Specs{Config: cfg}
	tests := []struct {
		job     string
		want    []string // in this order
		notWant []string
	}{
		{"foo.1.0,compilers,4.13,build", []string{"(from kiln/debian:bookworm", "opam init", "opam pin add -k version -yn foo.1.0 1.0", "opam reinstall foo.1.0\\n"},
			[]string{"--with-test", "OPAMCRITERIA", "ln -sf"}},
		{"foo.1.0,compilers,4.13,tests", []string{"opam reinstall foo.1.0\\n", "(network host)", "(opam reinstall --with-test foo.1.0) || true", "opam reinstall --with-test --verbose foo.1.0\\n"},
			[]string{"OPAMCRITERIA"}},
		{"foo.1.0,compilers,5.3,lower-bounds", []string{"(from docker.io/ocaml/opam:debian-12-ocaml-5.3)", "opam reinstall foo.1.0\\n", "(env OPAMCRITERIA +removed,+count[version-lag,solution])", "opam reinstall foo.1.0\\n"},
			[]string{"--with-test"}},
		{"foo.1.0,compilers,4.13,revdeps,bar.2", []string{"opam pin add -k version -yn foo.1.0 1.0", "opam reinstall foo.1.0\\n", "opam reinstall bar.2\\n", "opam reinstall --with-test --verbose bar.2\\n"},
			[]string{"--with-test --verbose foo.1.0"}},
		{"foo.1.0,opam-versions,opam-2.4,build", []string{"ln -sf /usr/bin/opam-2.4 /usr/local/bin/opam", "opam init"}, nil},
		{"ocaml-base-compiler.5.4.0,compilers,4.13,build", []string{"opam reinstall --update-invariant ocaml-base-compiler.5.4.0"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.job, func(t *testing.T) {
			j, err := cfg.ParseJob(tc.job)
			if err != nil {
				t.Fatal(err)
			}
			sp, err := s.Spec(j)
			if err != nil {
				t.Fatal(err)
			}
			text := sp.String()
			back, err := spec.Parse("job.spec", []byte(text))
			if err != nil {
				t.Fatalf("the spec does not parse back: %v\n%s", err, text)
			}
			if back.String() != text {
				t.Errorf("the spec prints differently once read back")
			}
			rest := text
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q missing (or out of order) in\n%s", w, text)
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tc.notWant {
				if strings.Contains(text, w) {
					t.Errorf("%q in\n%s", w, text)
				}
			}
			var shells []string
			for _, op := range back.Ops {
				if r, ok := op.(spec.Run); ok {
					shells = append(shells, r.Shell)
				}
			}
			all := strings.Join(shells, "\n")
			if !strings.Contains(all, "opam-repo-ci detected dependencies failing") || !strings.Contains(all, `grep -qF '"debian-12"'`) {
				t.Errorf("the install step does not name failing dependencies or accepted failures on debian-12:\n%s", all)
			}
		})
	}
}

func TestParseJobErrors(t *testing.T) {
	tests := []struct{ id, want string }{
		{"foo.1.0,compilers,4.13", "want PACKAGE,GROUP,LABEL,KIND"},
		{"foo,compilers,4.13,build", `"foo" is not NAME.VERSION`},
		{"foo.1,compilers,9.9,build", "no compilers entry labelled \"9.9\""},
		{"foo.1,compilers,4.13,fly", "unknown kind"},
		{"foo.1,compilers,4.13,revdeps", "fifth part"},
		{"foo.1,compilers,4.13,build,bar.1", "fifth part"},
		{"foo.1,architectures,arm64,lower-bounds", "no lower-bounds jobs"},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			_, err := Default().ParseJob(tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestRepro(t *testing.T) {
	s := &Specs{Config: Default()}
	j, err := s.Config.ParseJob("foo.1.0,compilers,4.13,revdeps,bar.2")
	if err != nil {
		t.Fatal(err)
	}
	src := Source{CloneURL: "https://github.com/ocaml/opam-repository.git", HeadRef: "refs/pull/7/head", Head: "abc123", Base: "def456"}
	text, err := s.Repro(src, j)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := s.Spec(j)
	for _, w := range []string{
		"git clone https://github.com/ocaml/opam-repository.git opam-repository",
		"git fetch origin refs/pull/7/head && git checkout -q --detach abc123",
		"git merge -q --no-edit def456",
		"kiln base debian --suite bookworm --arch amd64 --packages ocaml-nox,opam",
		"cat > ../build.spec <<'END-OF-SPEC'\n" + sp.String() + "END-OF-SPEC\n",
		"kiln build -f ../build.spec --context .",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("%q missing in\n%s", w, text)
		}
	}
}

func TestFleetRequest(t *testing.T) {
	tests := []struct {
		forge, repo, pr, want string
	}{
		{"github", "ocaml/opam-repository", "1234", "opam-repo-ci.github.ocaml_opam-repository.1234"},
		{"git", "/srv/repo.git", "feature/x", "opam-repo-ci.git._srv_repo_git.feature_x"},
		{"gitea", "a", "", "opam-repo-ci.gitea.a._"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := FleetClient(tc.forge, tc.repo, tc.pr); got != tc.want {
				t.Errorf("FleetClient = %q, want %q", got, tc.want)
			}
		})
	}
	if n := len(FleetClient("github", strings.Repeat("x", 200), "1")); n > 128 {
		t.Errorf("client name of %d characters", n)
	}
	s := &Specs{Config: Default()}
	for _, bg := range []bool{false, true} {
		j, _ := s.Config.ParseJob("foo.1.0,architectures,arm64,build")
		j.Background = bg
		r, err := s.Request(j, "c")
		if err != nil {
			t.Fatal(err)
		}
		if r.Pool != "linux-arm64" || r.Client != "c" || r.Urgent == bg || r.CacheHint != "debian-12-4.13_arm64-foo.1.0" {
			t.Errorf("request %+v", r)
		}
	}
}
