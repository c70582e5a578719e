package spec

import (
	"reflect"
	"strings"
	"testing"
)

func TestRunTmpfs(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		want     []string
		buildkit string // in the BuildKit Dockerfile
		classic  string // in the classic Dockerfile
	}{
		{name: "one directory", text: `((from x) (run (tmpfs /bench) (shell "make bench")))`, want: []string{"/bench"},
			buildkit: "RUN --mount=type=tmpfs,target=/bench --network=none make bench", classic: "# BuildKit only: tmpfs at /bench is a plain directory here"},
		{name: "two, relative to the workdir", text: `((from x) (workdir /src) (run (network host) (tmpfs /tmp work) (shell x)))`, want: []string{"/tmp", "work"},
			buildkit: "RUN --mount=type=tmpfs,target=/tmp --mount=type=tmpfs,target=work --network=host x", classic: "# BuildKit only: tmpfs at work is a plain directory here"},
		{name: "none", text: `((from x) (run (shell x)))`, buildkit: "RUN --network=none x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseString(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Ops[len(s.Ops)-1].(Run)
			if !reflect.DeepEqual(r.Tmpfs, tt.want) {
				t.Errorf("tmpfs = %q, want %q", r.Tmpfs, tt.want)
			}
			again, err := ParseString(s.String())
			if err != nil {
				t.Fatalf("printed spec does not parse: %v\n%s", err, s)
			}
			if got := again.Ops[len(again.Ops)-1].(Run).Tmpfs; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("after printing, tmpfs = %q, want %q\n%s", got, tt.want, s)
			}
			if d := s.Dockerfile(DockerfileOptions{BuildKit: true}); !strings.Contains(d, tt.buildkit+"\n") {
				t.Errorf("BuildKit Dockerfile lacks %q:\n%s", tt.buildkit, d)
			}
			if d := s.Dockerfile(DockerfileOptions{}); tt.classic != "" && !strings.Contains(d, tt.classic+"\n") {
				t.Errorf("classic Dockerfile lacks %q:\n%s", tt.classic, d)
			}
		})
	}
}
