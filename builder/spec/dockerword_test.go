package spec

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/dockerfile")

// The functions below model how Docker reads the parts of a Dockerfile line that the
// renderer escapes (the parser's flag words, the CSV of --mount, and the word
// processing that expands variables), so that tests can read a rendering back.

// flagWord reads the first --flag word of line as Docker's parser does: quotes
// grouped, backslash escaping the next character.
func flagWord(line string) (word, rest string) {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == 0 && unicode.IsSpace(rune(c)):
			return b.String(), line[i+1:]
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
		case quote == 0 && (c == '\'' || c == '"'):
			quote = c
		case quote != 0 && c == quote:
			quote = 0
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), ""
}

var errExpands = errors.New("Docker would expand a variable")

// processWord undoes Docker's word processing of one word (no variables defined).
func processWord(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return "", fmt.Errorf("unterminated single quote in %q", s)
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"$\\", s[i+1]) >= 0:
					i++
					b.WriteByte(s[i])
				case s[i] == '$':
					return "", errExpands
				default:
					b.WriteByte(s[i])
				}
			}
			if i >= len(s) {
				return "", fmt.Errorf("unterminated double quote in %q", s)
			}
		case c == '$' && i+1 < len(s) && (s[i+1] == '{' || s[i+1] == '_' || unicode.IsLetter(rune(s[i+1]))):
			return "", errExpands
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// readMount reads a --mount flag back into its fields.
func readMount(t *testing.T, word string) map[string]string {
	t.Helper()
	value, ok := strings.CutPrefix(word, "--mount=")
	if !ok {
		t.Fatalf("not a mount flag: %q", word)
	}
	fields, err := csv.NewReader(strings.NewReader(value)).Read()
	if err != nil {
		t.Fatalf("mount %q: %v", value, err)
	}
	out := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		if out[k], err = processWord(v); err != nil {
			t.Fatalf("mount field %q: %v", f, err)
		}
	}
	return out
}

func lineWith(t *testing.T, df, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(df, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, df)
	return ""
}

// awkward strings for every escaping layer: the ones of the spec-conformance check and
// what Docker's parsers treat specially.
var awkward = []string{
	"$HOME/x", `c:\opam\download-cache`, "my cache", "a,b", `a"b`, "it's", `\$x`, "${X}", "tab\there", " lead", `trail\`,
}

func TestDockerfileEscapesWords(t *testing.T) {
	for _, v := range awkward {
		t.Run(v, func(t *testing.T) { checkWords(t, v) })
	}
}

// FuzzDockerfileWords reads back the COPY paths, WORKDIR and --mount values rendered
// for any string that a Dockerfile line can hold.
func FuzzDockerfileWords(f *testing.F) {
	for _, v := range awkward {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		// Docker's flag parser reads bytes as runes: no rendering keeps non-ASCII
		// --mount values.
		if v == "" || strings.ContainsAny(v, "\n\r\x00") || strings.IndexFunc(v, func(r rune) bool { return r >= utf8.RuneSelf }) >= 0 {
			return
		}
		checkWords(t, v)
	})
}

// checkWords renders a spec using v in a workdir, copy paths and mounts, and reads
// each back as Docker would.
func checkWords(t *testing.T, v string) {
	t.Helper()
	s := &Spec{From: "alpine", Ops: []Op{
		Workdir{Path: "/w/" + v},
		Copy{Src: []string{v, "b"}, Dst: "/d/" + v + "/"},
		Run{Shell: "true", Cache: []Cache{{ID: v, Target: "/c/" + v}}, Secrets: []Secret{{ID: v, Target: "/s/" + v, BuildkitOptions: []Option{{"mode", "0400"}}}}},
	}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	df := s.Dockerfile(DockerfileOptions{BuildKit: true})

	wd, err := processWord(strings.TrimSpace(strings.TrimPrefix(lineWith(t, df, "WORKDIR "), "WORKDIR ")))
	if err != nil || wd != "/w/"+v {
		t.Errorf("WORKDIR reads as %q (%v), want %q", wd, err, "/w/"+v)
	}

	var paths []string
	args := strings.TrimPrefix(lineWith(t, df, "COPY "), "COPY ")
	if !strings.HasPrefix(args, "[") {
		paths = strings.Fields(args)
	} else if err := json.Unmarshal([]byte(args), &paths); err != nil {
		t.Fatalf("COPY: %v\n%s", err, df)
	}
	want := []string{v, "b", "/d/" + v + "/"}
	if len(paths) != len(want) {
		t.Fatalf("COPY has %d paths, want %d:\n%s", len(paths), len(want), df)
	}
	for i, p := range paths {
		if got, err := processWord(p); err != nil || got != want[i] {
			t.Errorf("COPY path %d reads as %q (%v), want %q", i, got, err, want[i])
		}
	}

	rest := strings.TrimPrefix(lineWith(t, df, "RUN "), "RUN ")
	var secret, cache string
	secret, rest = flagWord(rest)
	cache, rest = flagWord(rest)
	if rest != "--network=none true" {
		t.Errorf("after the mounts: %q", rest)
	}
	sm, cm := readMount(t, secret), readMount(t, cache)
	if sm["type"] != "secret" || sm["id"] != v || sm["target"] != "/s/"+v || sm["mode"] != "0400" {
		t.Errorf("secret mount reads as %q", sm)
	}
	if cm["type"] != "cache" || cm["id"] != v || cm["target"] != "/c/"+v {
		t.Errorf("cache mount reads as %q", cm)
	}
}

func TestDockerfileEnvLineBreaks(t *testing.T) {
	for _, v := range []string{"a\nb", "a\\\nb", "x\r\ny'z\\", "\n"} {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			s := &Spec{From: "alpine", Ops: []Op{Env{Name: "K", Value: v}}}
			df := s.Dockerfile(DockerfileOptions{})
			if l := lineWith(t, df, "ENV "); l != `ENV K="${KILN_ENV_1}"` {
				t.Errorf("ENV line %q", l)
			}
			lineWith(t, df, "ARG KILN_ENV_1")
			hint := strings.TrimPrefix(lineWith(t, df, "#   --build-arg "), "#   --build-arg KILN_ENV_1=")
			if _, err := exec.LookPath("bash"); err != nil {
				t.Skip("bash is not installed: cannot read the $'…' argument back")
			}
			out, err := exec.Command("bash", "-c", "printf %s "+hint).Output()
			if err != nil || string(out) != v {
				t.Errorf("--build-arg value %s reads as %q (%v), want %q", hint, out, err, v)
			}
		})
	}
}

// TestDockerfileGolden compares renderings with testdata/dockerfile; -update rewrites
// them.
func TestDockerfileGolden(t *testing.T) {
	for _, name := range []string{"ocaml-ci-linux", "multistage", "escapes"} {
		for _, kit := range []bool{true, false} {
			form := map[bool]string{true: "buildkit", false: "classic"}[kit]
			t.Run(name+"/"+form, func(t *testing.T) {
				s := mustParseFile(t, name+".spec")
				got := s.Dockerfile(DockerfileOptions{BuildKit: kit})
				file := filepath.Join("testdata", "dockerfile", name+"."+form)
				if *update {
					if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatalf("%v (run with -update to write it)", err)
				}
				if got != string(want) {
					t.Errorf("rendering differs from %s (-update rewrites it):\n%s", file, got)
				}
			})
		}
	}
}

func TestReproduceNote(t *testing.T) {
	s := mustParseFile(t, "multistage.spec")
	s.From = "kiln/debian:bookworm"
	note := s.ReproduceNote()
	for _, l := range strings.Split(strings.TrimSuffix(note, "\n"), "\n") {
		if !strings.HasPrefix(l, "#") {
			t.Errorf("note line is not a comment: %q", l)
		}
	}
	for _, want := range []string{
		"kiln base export kiln/debian:bookworm | docker load",
		"#   FROM kiln/debian:bookworm\n",
		"--print-dockerfile --buildkit",
	} {
		if !strings.Contains(note, want) {
			t.Errorf("note lacks %q:\n%s", want, note)
		}
	}
	if strings.Contains(note, "--mount") || strings.Contains(note, "--network") {
		t.Errorf("note has BuildKit-only flags:\n%s", note)
	}
}

func TestRunExecFormKeepsCommand(t *testing.T) {
	for _, cmd := range []string{"echo \"a\",\"b\"\necho c", "echo\necho \"a\",", "x\\", " lead", "cat <<EOF"} {
		t.Run(cmd, func(t *testing.T) {
			s := &Spec{From: "alpine", Ops: []Op{Run{Shell: cmd}}}
			var args []string
			line := strings.TrimPrefix(lineWith(t, s.Dockerfile(DockerfileOptions{}), "RUN "), "RUN ")
			if err := json.Unmarshal([]byte(line), &args); err != nil {
				t.Fatalf("RUN %s: %v", line, err)
			}
			if len(args) != 3 || args[2] != cmd {
				t.Errorf("RUN reads as %q, want the command %q", args, cmd)
			}
		})
	}
}
