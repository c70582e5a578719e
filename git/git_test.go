package git_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func sampleRepo(t *testing.T) (*gittest.Repo, string) {
	r := gittest.NewRepo(t)
	c := r.Commit("first", map[string]string{
		"README.md":       "hello\n",
		"dune-project":    "(lang dune 3.0)\n",
		"src/main.ml":     "let () = print_endline \"hi\"\n",
		"src/run.sh":      "#!/bin/sh\necho run\n",
		"link":            "symlink:README.md",
		".gitattributes":  "secret.txt export-ignore\n",
		"secret.txt":      "kept in checkouts\n",
		"test/a/b/x.opam": "opam-version: \"2.0\"\n",
	})
	return r, c
}

func TestFetchMirrorAndHeads(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	up, c1 := sampleRepo(t)
	up.Git("branch", "feature")
	url := srv.Publish(t, up, "org/proj.git")

	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	r, err := m.Fetch(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	heads, err := r.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"refs/heads/main": c1, "refs/heads/feature": c1}
	if !equalMaps(heads, want) {
		t.Fatalf("heads = %v, want %v", heads, want)
	}
	if !strings.HasPrefix(filepath.Base(r.Dir), "127.0.0.1-") || !strings.HasSuffix(r.Dir, ".git") {
		t.Errorf("mirror dir %s does not name the remote", r.Dir)
	}

	// A new commit on main and a deleted branch upstream.
	c2 := up.Commit("second", map[string]string{"README.md": "hello again\n"})
	up.Git("branch", "-D", "feature")
	srv.Publish(t, up, "org/proj.git")
	if _, err := m.Fetch(ctx, url); err != nil {
		t.Fatal(err)
	}
	heads, _ = r.Heads(ctx)
	if want := map[string]string{"refs/heads/main": c2}; !equalMaps(heads, want) {
		t.Fatalf("after update, heads = %v, want %v", heads, want)
	}

	if err := m.Remove(ctx, url); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("mirror still there after Remove: %v", err)
	}
	if _, err := m.Fetch(ctx, url); err != nil {
		t.Fatal(err)
	}
	remote, err := git.Heads(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !equalMaps(remote, heads) {
		t.Fatalf("ls-remote heads %v differ from mirror heads %v", remote, heads)
	}
	local, err := git.Heads(ctx, up.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !equalMaps(local, heads) {
		t.Fatalf("heads of local dir %v differ from %v", local, heads)
	}
}

// A new commit fetched by its ref costs two git commands: the check that it is missing,
// and the fetch; the ref the fetch wrote says the commit arrived.
func TestFetchCommitByItsRef(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	up, _ := sampleRepo(t)
	url := srv.Publish(t, up, "proj.git")
	var log testenv.Buffer
	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if _, err := m.Fetch(ctx, url); err != nil {
		t.Fatal(err)
	}
	c := up.Commit("second", map[string]string{"README.md": "hello again\n"})
	srv.Publish(t, up, "proj.git")
	before := strings.Count(log.String(), "msg=git ")
	r, err := m.FetchCommit(ctx, url, c, "refs/heads/main")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "msg=git ") - before; n != 2 {
		t.Errorf("%d git commands to fetch a new commit by its ref, want 2:\n%s", n, log.String())
	}
	if !r.HasCommit(ctx, c) {
		t.Error("the commit is missing after FetchCommit")
	}
}

func TestFetchPullRequestCommit(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	up, base := sampleRepo(t)
	up.Git("checkout", "--quiet", "-b", "pr")
	prCommit := up.Commit("pr change", map[string]string{"src/main.ml": "let () = exit 1\n"})
	up.Git("checkout", "--quiet", "main")
	up.Git("update-ref", "refs/pull/7/head", prCommit)
	up.Git("branch", "-D", "pr")
	url := srv.Publish(t, up, "proj.git")

	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	r, err := m.Fetch(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if r.HasCommit(ctx, prCommit) {
		t.Fatal("PR commit fetched with the branches; the test would prove nothing")
	}
	if _, err := m.FetchCommit(ctx, url, prCommit, "refs/pull/7/head"); err != nil {
		t.Fatal(err)
	}
	if !r.HasCommit(ctx, prCommit) {
		t.Fatal("PR commit missing after FetchCommit")
	}
	refs, _ := r.Refs(ctx, "refs/pull/")
	if refs["refs/pull/7/head"] != prCommit {
		t.Fatalf("refs/pull/7/head = %q, want %s", refs["refs/pull/7/head"], prCommit)
	}
	// Already present: no further request.
	before := srv.Requests.Load()
	if _, err := m.FetchCommit(ctx, url, base); err != nil {
		t.Fatal(err)
	}
	if n := srv.Requests.Load() - before; n != 0 {
		t.Errorf("FetchCommit of a commit already mirrored made %d requests", n)
	}
	// The PR ref is gone (closed and cleaned up) but the commit is still on the server.
	up.Git("update-ref", "-d", "refs/pull/7/head")
	up.Git("tag", "keep", prCommit)
	srv.Publish(t, up, "proj.git")
	m2 := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	if _, err := m2.FetchCommit(ctx, url, prCommit, "refs/pull/7/head"); err != nil {
		t.Fatalf("fetch of a commit whose ref vanished: %v", err)
	}
	_, err = m.FetchCommit(ctx, url, strings.Repeat("ab", 20), "refs/pull/99/head")
	if !errors.Is(err, git.ErrNoCommit) || !strings.Contains(err.Error(), "refs/pull/99/head") {
		t.Fatalf("fetch of an unknown commit by a missing ref: err = %v, want ErrNoCommit naming the ref", err)
	}
	_, err = m.FetchCommit(ctx, url, strings.Repeat("ab", 20), "refs/heads/main")
	if !errors.Is(err, git.ErrNoCommit) {
		t.Fatalf("fetch of an unknown commit: err = %v, want ErrNoCommit", err)
	}
	if _, err := m.FetchRefs(ctx, url, "--upload-pack=touch /tmp/x"); err == nil {
		t.Fatal("a ref name that is an option was accepted")
	}
}

func TestCheckoutWritesTheTreeWithoutGit(t *testing.T) {
	ctx := context.Background()
	up, c := sampleRepo(t)
	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	r, err := m.Fetch(ctx, up.Dir)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "src")
	if err := r.Checkout(ctx, c, dest); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"README.md": "hello\n", "secret.txt": "kept in checkouts\n", "src/main.ml": "let () = print_endline \"hi\"\n"} {
		got, err := os.ReadFile(filepath.Join(dest, p))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dest, "src/run.sh")); err != nil || st.Mode().Perm()&0o100 == 0 {
		t.Errorf("src/run.sh lost its executable bit: %v %v", st, err)
	}
	if target, err := os.Readlink(filepath.Join(dest, "link")); err != nil || target != "README.md" {
		t.Errorf("link = %q, %v; want a symlink to README.md", target, err)
	}
	if _, err := os.Stat(filepath.Join(dest, ".git")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("checkout has a .git: %v", err)
	}
	if err := r.Checkout(ctx, c, dest); err == nil {
		t.Error("checkout into a non-empty directory succeeded")
	}
	if err := r.Checkout(ctx, strings.Repeat("0", 40), filepath.Join(t.TempDir(), "x")); !errors.Is(err, git.ErrNoCommit) {
		t.Errorf("checkout of a missing commit: %v, want ErrNoCommit", err)
	}
}

func TestReadFilesAndListTree(t *testing.T) {
	ctx := context.Background()
	up, c := sampleRepo(t)
	r, err := git.Open(ctx, up.Dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := r.ReadFile(ctx, c, "dune-project")
	if err != nil || string(data) != "(lang dune 3.0)\n" {
		t.Fatalf("ReadFile(dune-project) = %q, %v", data, err)
	}
	if _, err := r.ReadFile(ctx, c, "nope.opam"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadFile of a missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := r.ReadFile(ctx, c, "src"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadFile of a directory: %v, want fs.ErrNotExist", err)
	}
	files, err := r.ReadFiles(ctx, c, []string{"README.md", "missing", "src/main.ml"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || string(files["README.md"]) != "hello\n" {
		t.Fatalf("ReadFiles = %q", files)
	}

	top, err := r.ListTree(ctx, c, "", false)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]git.TreeEntry{}
	for _, e := range top {
		names[e.Path] = e
	}
	if e := names["src"]; e.Type != "tree" || !e.Mode.IsDir() {
		t.Errorf("src entry = %+v, want a tree", e)
	}
	if e := names["link"]; e.Mode&fs.ModeSymlink == 0 {
		t.Errorf("link entry = %+v, want a symlink", e)
	}
	if e := names["README.md"]; e.Size != 6 || e.Type != "blob" {
		t.Errorf("README.md entry = %+v, want a 6-byte blob", e)
	}
	all, err := r.ListTree(ctx, c, "test", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Path != "test/a/b/x.opam" {
		t.Errorf("recursive listing of test = %+v", all)
	}
	if _, err := r.ListTree(ctx, strings.Repeat("1", 40), "", false); !errors.Is(err, git.ErrNoCommit) {
		t.Errorf("ListTree of a missing commit: %v", err)
	}
	if _, err := git.Open(ctx, t.TempDir()); err == nil {
		t.Error("Open of an empty directory succeeded")
	}
}

func TestPrivateRepositoryCredentials(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	const token = "s3cr3t-t0ken"
	srv.Token = token
	up, c := sampleRepo(t)
	url := srv.Publish(t, up, "private.git")

	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	_, err := m.Fetch(ctx, url)
	if !errors.Is(err, git.ErrAuth) {
		t.Fatalf("fetch without credentials: %v, want ErrAuth", err)
	}
	if !strings.Contains(err.Error(), "authentication failed for "+url) {
		t.Errorf("message %q does not say authentication failed for %s", err, url)
	}

	wrong := git.NewMirrors(t.TempDir(), git.MirrorsOptions{Credentials: git.StaticCredentials(srv.URL, git.Credentials{Token: "wrong"})})
	if _, err := wrong.Fetch(ctx, url); !errors.Is(err, git.ErrAuth) {
		t.Fatalf("fetch with a wrong token: %v, want ErrAuth", err)
	}

	good := git.NewMirrors(t.TempDir(), git.MirrorsOptions{Credentials: git.StaticCredentials(srv.URL, git.Credentials{Token: token})})
	r, err := good.Fetch(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if !r.HasCommit(ctx, c) {
		t.Fatal("commit missing after an authenticated fetch")
	}
	if cfg, _ := os.ReadFile(filepath.Join(r.Dir, "config")); strings.Contains(string(cfg), token) {
		t.Error("the token was written into the mirror's config")
	}

	// A token in the URL is used, and kept out of messages and the mirror's name.
	withToken := strings.Replace(url, "http://", "http://user:"+token+"@", 1)
	heads, err := git.Heads(ctx, withToken, nil)
	if err != nil || heads["refs/heads/main"] != c {
		t.Fatalf("ls-remote with a token in the URL: %v, %v", heads, err)
	}
	badURL := strings.Replace(url, "http://", "http://user:"+token+"x@", 1)
	_, err = git.Heads(ctx, badURL, nil)
	if !errors.Is(err, git.ErrAuth) || strings.Contains(err.Error(), token) {
		t.Fatalf("error %q: want ErrAuth without the token", err)
	}
	if got := m.Path(withToken); got != m.Path(url) || strings.Contains(got, token) {
		t.Errorf("mirror path %s for a URL with a token", got)
	}
}

func TestAccessFailuresAreNamed(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	_, err := m.Fetch(ctx, srv.URL+"/missing.git")
	if !errors.Is(err, git.ErrNotFound) || !strings.Contains(err.Error(), "repository not found") {
		t.Fatalf("fetch of a missing repository: %v, want ErrNotFound", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/x.git"
	l.Close()
	_, err = git.LsRemote(ctx, closed, nil)
	if !errors.Is(err, git.ErrNetwork) || !strings.Contains(err.Error(), "network error reaching "+closed) {
		t.Fatalf("ls-remote of a closed port: %v, want ErrNetwork", err)
	}
	_, err = git.LsRemote(ctx, filepath.Join(t.TempDir(), "nothing"), nil)
	if !errors.Is(err, git.ErrNotFound) {
		t.Fatalf("ls-remote of a missing directory: %v, want ErrNotFound", err)
	}
}

func TestCancelKillsGit(t *testing.T) {
	srv := gittest.NewServer(t)
	up, _ := sampleRepo(t)
	url := srv.Publish(t, up, "slow.git")
	srv.Hang.Store(true)
	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := m.Fetch(ctx, url); done <- err }()
	for srv.Requests.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v, want context.Canceled", err)
	}
	// The hanging request ends only when git (the client) has gone.
	for srv.InFlight() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	// The mirror lock was released: a later fetch works.
	srv.Hang.Store(false)
	if _, err := m.Fetch(context.Background(), url); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentFetchesOfOneMirrorAreSerialised(t *testing.T) {
	srv := gittest.NewServer(t)
	up, c := sampleRepo(t)
	url := srv.Publish(t, up, "busy.git")
	other := srv.Publish(t, up, "other.git")

	// A wrapper around git records how many fetches into each mirror run at once: mkdir
	// is atomic, so a fetch that finds the directory taken overlaps another.
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	marks := t.TempDir()
	wrapper := filepath.Join(t.TempDir(), "git")
	script := `#!/bin/sh
for a in "$@"; do case "$a" in --git-dir=*) d=$(basename "${a#--git-dir=}");; fetch) f=1;; esac; done
if [ -n "$f" ]; then
  if mkdir "` + marks + `/$d" 2>/dev/null; then :; else touch "` + marks + `/overlap-$d"; fi
  sleep 0.2
  "` + real + `" "$@"; rc=$?
  rmdir "` + marks + `/$d" 2>/dev/null
  exit $rc
fi
exec "` + real + `" "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	saved := git.Binary
	git.Binary = wrapper
	t.Cleanup(func() { git.Binary = saved })

	m := git.NewMirrors(t.TempDir(), git.MirrorsOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		remote := url
		if i%4 == 3 {
			remote = other
		}
		wg.Go(func() {
			_, err := m.FetchRefs(context.Background(), remote, "refs/heads/main")
			if err == nil {
				_, err = m.FetchCommit(context.Background(), remote, c)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(marks)
	for _, e := range entries {
		t.Errorf("fetches into one mirror overlapped: %s", e.Name())
	}
}

func TestContextCancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	up, _ := sampleRepo(t)
	if _, err := git.LsRemote(ctx, up.Dir, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("ls-remote with a cancelled context: %v", err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
