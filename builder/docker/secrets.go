package docker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kiln-ci/kiln/builder"
)

// Secret values are bind-mounted into step containers from files that must never
// reach a disk: they live in a directory on a tmpfs, named after this process so
// that the directories of processes that are gone are removed at start.

const secretPrefix = "kiln-docker-secrets-"

// secretRoots are the tmpfs folders secrets may go to, in order of preference.
func secretRoots() []string {
	roots := []string{"/dev/shm"}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		roots = append(roots, d)
	}
	return roots
}

func isTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// secretDir makes a private directory for one step's secrets on a tmpfs.
func secretDir() (string, error) {
	var b [8]byte
	rand.Read(b[:])
	for _, root := range secretRoots() {
		if !isTmpfs(root) {
			continue
		}
		dir := filepath.Join(root, secretPrefix+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(b[:]))
		if err := os.Mkdir(dir, 0o700); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("secrets: no writable tmpfs among %s to keep secret values off the disk", strings.Join(secretRoots(), ", "))
}

// removeStaleSecrets removes the secret directories of processes that are gone, and
// those that earlier versions left in the temporary folder.
func removeStaleSecrets() {
	for _, root := range secretRoots() {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			rest, ok := strings.CutPrefix(e.Name(), secretPrefix)
			if !ok {
				continue
			}
			pidText, _, _ := strings.Cut(rest, "-")
			if pid, err := strconv.Atoi(pidText); err == nil && processGone(pid) {
				removeSecretDir(filepath.Join(root, e.Name()))
			}
		}
	}
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "kiln-secrets-*"))
	for _, d := range old {
		removeSecretDir(d)
	}
}

func processGone(pid int) bool {
	return pid > 0 && errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

func removeSecretDir(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		slog.Warn("docker: removing leftover secrets", "dir", dir, "err", err)
		return
	}
	slog.Info("docker: removed leftover secrets", "dir", dir)
}

// cacheVolumeName is the engine volume of a named cache. Volume names allow only
// [a-zA-Z0-9_.-], so other ids are named by their digest, under another prefix.
func cacheVolumeName(id string) string {
	if builder.CacheFileName(id) == id {
		return "kiln-cache-" + id
	}
	sum := sha256.Sum256([]byte(id))
	return "kiln-cachex-" + hex.EncodeToString(sum[:])
}
