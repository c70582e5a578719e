package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImagesPlanAndLs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		args    []string
		want    string // in the output
		wantErr string
	}{
		{name: "default plan", args: []string{"plan"}, want: "latest                       -> debian-13-ocaml-5.3"},
		{name: "plan as JSON", args: []string{"plan", "--json", "--config", write("one.yaml", "arches: [arm64]\ndistros: [{name: debian-12}]")}, want: `"pool": "linux-arm64"`},
		{name: "unknown distro", args: []string{"plan", "--config", write("bad.yaml", "distros: [{name: ubuntu-24.04}]")}, wantErr: `distros[0].name: unknown distribution "ubuntu-24.04"`},
		{name: "nothing published yet", args: []string{"ls", "--state-dir", dir}, want: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := imagesCmd()
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(c.args)
			err := cmd.Execute()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), c.want) {
				t.Errorf("output %q, want %q in it", out.String(), c.want)
			}
		})
	}
}
