package docker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestStaleSecretsRemoved(t *testing.T) {
	if !isTmpfs("/dev/shm") {
		t.Skip("/dev/shm is not a tmpfs")
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Skipf("cannot run true to find a finished process: %v", err)
	}
	cases := []struct {
		name string
		dir  string
		kept bool
	}{
		{"process gone", filepath.Join("/dev/shm", secretPrefix+strconv.Itoa(gone.Process.Pid)+"-test"), false},
		{"process alive", filepath.Join("/dev/shm", secretPrefix+strconv.Itoa(os.Getpid())+"-test"), true},
		{"left in the temporary folder by earlier versions", filepath.Join(os.TempDir(), "kiln-secrets-test"+strconv.Itoa(os.Getpid())), false},
	}
	for _, c := range cases {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(c.dir, "0"), []byte("value"), 0o400)
		defer os.RemoveAll(c.dir)
	}
	if _, err := NewRunner(&Engine{}, nil, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := os.Stat(c.dir)
			if kept := err == nil; kept != c.kept {
				t.Errorf("%s: kept = %v, want %v", c.dir, kept, c.kept)
			}
		})
	}
}

func TestSecretDirOnTmpfs(t *testing.T) {
	dir, err := secretDir()
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	if !isTmpfs(dir) {
		t.Errorf("%s is not on a tmpfs", dir)
	}
}
