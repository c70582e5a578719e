package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const cgroupRoot = "/sys/fs/cgroup"

// CgroupVersion tells which cgroup hierarchy the machine offers: 2 (unified), 1 (legacy
// or hybrid, with a memory controller) or 0 (none usable; limits are not enforced).
func CgroupVersion() int {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return 2
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "memory", "memory.limit_in_bytes")); err == nil {
		return 1
	}
	return 0
}

// memoryCgroup is a cgroup made by the sandbox around runc's own one, holding the memory
// limit. runc removes its cgroup when the container ends; this outer one stays until the
// sandbox has read whether the kernel killed something for lack of memory.
type memoryCgroup struct {
	version int
	rel     string // path relative to the hierarchy roots, e.g. kiln/<id>
	limit   int64
}

// newMemoryCgroup makes the outer cgroup rel with the memory limit (bytes; 0 for none).
func newMemoryCgroup(rel string, limit int64) (*memoryCgroup, error) {
	c := &memoryCgroup{version: CgroupVersion(), rel: rel, limit: limit}
	if limit <= 0 {
		return c, nil
	}
	switch c.version {
	case 1:
		dir := filepath.Join(cgroupRoot, "memory", rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(dir, "memory.limit_in_bytes"), strconv.FormatInt(limit, 10)); err != nil {
			c.remove()
			return nil, err
		}
	case 2:
		parts := strings.Split(rel, "/")
		cur := cgroupRoot
		for _, p := range parts {
			// Delegate the controllers down to the new level.
			if err := writeFile(filepath.Join(cur, "cgroup.subtree_control"), "+memory +pids +cpu"); err != nil {
				writeFile(filepath.Join(cur, "cgroup.subtree_control"), "+memory")
			}
			cur = filepath.Join(cur, p)
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
		}
		writeFile(filepath.Join(cur, "cgroup.subtree_control"), "+memory +pids +cpu")
		if err := writeFile(filepath.Join(cur, "memory.max"), strconv.FormatInt(limit, 10)); err != nil {
			c.remove()
			return nil, err
		}
		writeFile(filepath.Join(cur, "memory.swap.max"), "0")
	default:
		return nil, fmt.Errorf("no cgroup memory controller under %s", cgroupRoot)
	}
	return c, nil
}

// oomKilled reports whether the memory limit killed the command, given its exit status.
// Cgroup v2 counts OOM kills up the hierarchy; v1 counts them only in runc's own cgroup,
// gone by now, so there a SIGKILL after the limit was reached (failcnt) counts as one.
func (c *memoryCgroup) oomKilled(exitCode int) bool {
	if c.version == 1 {
		dir := filepath.Join(cgroupRoot, "memory", c.rel)
		return exitCode == 128+9 && (readCounter(filepath.Join(dir, "memory.failcnt"), "") > 0 ||
			readCounter(filepath.Join(dir, "memory.max_usage_in_bytes"), "") >= c.limit-c.limit/20)
	}
	return readCounter(filepath.Join(cgroupRoot, c.rel, "memory.events"), "oom_kill") > 0
}

// readCounter reads the number in file, or on the line starting with key.
func readCounter(file, key string) int64 {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if key != "" {
			k, v, _ := strings.Cut(line, " ")
			if k != key {
				continue
			}
			line = v
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		return n
	}
	return 0
}

// remove deletes the outer cgroup (in every v1 hierarchy runc may have used).
func (c *memoryCgroup) remove() {
	var dirs []string
	if c.version == 1 {
		entries, _ := os.ReadDir(cgroupRoot)
		for _, e := range entries {
			dirs = append(dirs, filepath.Join(cgroupRoot, e.Name(), c.rel))
		}
	} else {
		dirs = []string{filepath.Join(cgroupRoot, c.rel)}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		// runc removes its own child cgroup; wait briefly for it.
		for i := 0; i < 50; i++ {
			subs, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
			for _, s := range subs {
				os.Remove(filepath.Dir(s))
			}
			if err := os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func writeFile(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}
