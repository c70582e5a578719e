package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestBaseExport(t *testing.T) {
	testenv.RequireCommand(t, "tar")
	state := t.TempDir()
	st, err := image.Open(filepath.Join(state, "images"))
	if err != nil {
		t.Fatal(err)
	}
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	tw.WriteHeader(&tar.Header{Name: "etc/hostname-free", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	if _, err := st.Import(context.Background(), "kiln/tiny:1", &rootfs, image.Config{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"to a file", []string{"base", "--state-dir", state, "export", "kiln/tiny:1", "-o", filepath.Join(state, "out.tar")}, false},
		{"unknown base", []string{"base", "--state-dir", state, "export", "kiln/none:1", "-o", filepath.Join(state, "none.tar")}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rootCmd.SetArgs(c.args)
			err := rootCmd.Execute()
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error: %v", err, c.wantErr)
			}
			if c.wantErr {
				if _, err := os.Stat(c.args[len(c.args)-1]); err == nil {
					t.Error("a failed export left its file")
				}
				return
			}
			f, err := os.Open(c.args[len(c.args)-1])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tr := tar.NewReader(f)
			for {
				h, err := tr.Next()
				if err != nil {
					t.Fatalf("no manifest.json in the archive: %v", err)
				}
				if h.Name != "manifest.json" {
					continue
				}
				data, _ := io.ReadAll(tr)
				var m []struct{ RepoTags []string }
				if err := json.Unmarshal(data, &m); err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "kiln/tiny:1" {
					t.Errorf("manifest %s: %v", data, err)
				}
				return
			}
		})
	}
}
