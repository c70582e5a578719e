package ocamlci

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
)

// varSource is a Source whose refs the benchmark sets, as a forge's webhooks would,
// without polling any remote.
type varSource struct {
	mu    sync.Mutex
	refs  []forge.Ref
	order []int // indexes of refs in key order
	v     *current.Var[[]forge.Ref]
}

func newVarSource(refs []forge.Ref) *varSource {
	s := &varSource{}
	s.v = current.NewVar("bench refs", s.sorted(refs))
	return s
}

func (s *varSource) Refs() current.Term[[]forge.Ref] { return s.v.Term() }

// sorted keeps refs, sorted by key, and returns a copy.
func (s *varSource) sorted(refs []forge.Ref) []forge.Ref {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.order = make([]int, len(refs))
	keys := make([]string, len(refs))
	for i, r := range refs {
		s.order[i], keys[i] = i, r.Key()
	}
	sort.Slice(s.order, func(i, j int) bool { return keys[s.order[i]] < keys[s.order[j]] })
	s.refs = append([]forge.Ref(nil), refs...)
	return s.snapshot()
}

// snapshot is the refs in key order; the caller holds mu.
func (s *varSource) snapshot() []forge.Ref {
	out := make([]forge.Ref, len(s.refs))
	for i, k := range s.order {
		out[i] = s.refs[k]
	}
	return out
}

// push moves ref i (of the list the source was made with) to commit and hands the new
// list to the pipeline.
func (s *varSource) push(i int, commit string) {
	s.mu.Lock()
	s.refs[i].Commit = commit
	snap := s.snapshot()
	s.mu.Unlock()
	s.v.Set(snap)
}

// set hands a new list of refs to the pipeline.
func (s *varSource) set(refs []forge.Ref) { s.v.Set(s.sorted(refs)) }

// benchGit runs git in dir with a fixed identity and returns its trimmed output.
func benchGit(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=dev", "GIT_AUTHOR_EMAIL=dev@example.org",
		"GIT_COMMITTER_NAME=dev", "GIT_COMMITTER_EMAIL=dev@example.org")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %v in %s: %v\n%s", args, dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// benchProject is a small dune project with a library, a test, an opam file and a
// .ocamlformat (unless noFmt); tag makes its contents (and so its commit and source
// digest) unique.
func benchProject(name, tag string, noFmt bool) map[string]string {
	files := map[string]string{
		name + ".opam": fmt.Sprintf(`opam-version: "2.0"
synopsis: "Bench project %s"
maintainer: "dev@example.org"
authors: "dev@example.org"
license: "ISC"
homepage: "https://example.org/%s"
bug-reports: "https://example.org/%s/issues"
dev-repo: "git+https://example.org/%s.git"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} ]
build: [ ["dune" "build" "-p" name "-j" jobs] ["dune" "runtest" "-p" name] {with-test} ]
`, name, name, name, name),
		".ocamlformat":        "version = 0.26.1\n",
		"dune-project":        "(lang dune 2.0)\n",
		"src/dune":            fmt.Sprintf("(library (name %s))\n", name),
		"src/" + name + ".ml": fmt.Sprintf("let tag = %q\nlet greet who = \"Hello, \" ^ who\n", tag),
		"test/dune":           fmt.Sprintf("(test (name test_%s) (libraries %s))\n", name, name),
		"test/test_" + name + ".ml": fmt.Sprintf(`let () =
  if %s.greet "world" <> "Hello, world" then (prerr_endline "Error: wrong greeting"; exit 1);
  print_endline "test passed"
`, strings.ToUpper(name[:1])+name[1:]),
	}
	if noFmt {
		delete(files, ".ocamlformat")
	}
	return files
}

// benchCommit writes files on branch of the working repository dir and commits them.
func benchCommit(tb testing.TB, dir, branch string, files map[string]string, msg string) string {
	tb.Helper()
	benchGit(tb, dir, "checkout", "-q", "-B", branch)
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	benchGit(tb, dir, "add", "-A")
	benchGit(tb, dir, "commit", "-q", "--allow-empty", "-m", msg)
	return benchGit(tb, dir, "rev-parse", "HEAD")
}

// benchRemote makes a git repository holding project name with one commit per branch,
// each branch starting from main; it returns the heads by branch.
func benchRemote(tb testing.TB, dir, name string, branches []string, noFmt bool) map[string]string {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	benchGit(tb, dir, "init", "-q", "-b", branches[0])
	heads := map[string]string{}
	heads[branches[0]] = benchCommit(tb, dir, branches[0], benchProject(name, branches[0], noFmt), "initial")
	for _, br := range branches[1:] {
		benchGit(tb, dir, "checkout", "-q", branches[0])
		heads[br] = benchCommit(tb, dir, br, benchProject(name, br, noFmt), "work on "+br)
	}
	return heads
}

// benchRunner runs fleet tasks with a real builder.
type benchRunner struct{ b *builder.Builder }

func (r benchRunner) Run(ctx context.Context, t cluster.Task, log io.Writer) (string, error) {
	s, err := spec.Parse("job "+t.ID, []byte(t.Spec))
	if err != nil {
		return "", err
	}
	id, err := r.b.Build(ctx, s, builder.BuildContext{Dir: t.Context, Secrets: t.Secrets}, log)
	if err != nil && builder.IsInfrastructure(err) {
		return "", cluster.Infrastructure(err)
	}
	return id, err
}

// submission is one job the service handed to the fleet.
type submission struct {
	at     time.Time // submitted (Submit returned)
	called time.Time // Submit called
	id     string
	source string
	pool   string
}

// recordingFleet is the real fleet client, noting when each job is submitted and
// cancelled.
type recordingFleet struct {
	*cluster.Client
	mu        sync.Mutex
	submitted []submission
	cancelled int
	uploads   []upload
	changed   chan struct{}
	// watch, when set, serves Wait and defers following logs until jobs start.
	watch *jobWatch
}

func newRecordingFleet(c *cluster.Client) *recordingFleet {
	return &recordingFleet{Client: c, changed: make(chan struct{}, 1)}
}

func (f *recordingFleet) Submit(ctx context.Context, r cluster.Request) (*cluster.Job, error) {
	called := time.Now()
	j, err := f.Client.Submit(ctx, r)
	if err != nil {
		return j, err
	}
	f.mu.Lock()
	f.submitted = append(f.submitted, submission{at: time.Now(), called: called, id: j.ID, source: r.Source, pool: r.Pool})
	f.mu.Unlock()
	f.signal()
	return j, nil
}

// upload is one PutSource call.
type upload struct{ start, end time.Time }

func (f *recordingFleet) PutSource(ctx context.Context, dir string) (string, error) {
	start := time.Now()
	d, err := f.Client.PutSource(ctx, dir)
	f.mu.Lock()
	f.uploads = append(f.uploads, upload{start, time.Now()})
	f.mu.Unlock()
	return d, err
}

func (f *recordingFleet) Cancel(ctx context.Context, id string) error {
	err := f.Client.Cancel(ctx, id)
	f.mu.Lock()
	f.cancelled++
	f.mu.Unlock()
	f.signal()
	return err
}

func (f *recordingFleet) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// since returns the submissions from index n on, and the number of cancels.
func (f *recordingFleet) since(n int) ([]submission, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]submission(nil), f.submitted[min(n, len(f.submitted)):]...), f.cancelled
}

func (f *recordingFleet) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.submitted)
}

// jobWatch follows every fleet job through one watch of the fleet's job bucket, so
// waiting for a job and deferring its log until it starts cost no NATS consumer per
// job. It stands for a fleet client that shares one watch between its waiters.
type jobWatch struct {
	mu      sync.Mutex
	state   map[string]cluster.JobState
	jobs    map[string]*cluster.Job // finished jobs
	waiters map[string][]chan struct{}
}

// jobsBucket is the fleet's KV bucket of job records (cluster's bucketJobs).
const jobsBucket = "KILN_FLEET_JOBS"

func startJobWatch(tb testing.TB, ctx context.Context, c *cluster.Client) *jobWatch {
	tb.Helper()
	js, err := jetstream.New(c.Conn())
	if err != nil {
		tb.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, jobsBucket)
	if err != nil {
		tb.Fatalf("fleet job bucket %s: %v", jobsBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		tb.Fatal(err)
	}
	jw := &jobWatch{state: map[string]cluster.JobState{}, jobs: map[string]*cluster.Job{}, waiters: map[string][]chan struct{}{}}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var j cluster.Job
				if err := json.Unmarshal(e.Value(), &j); err != nil {
					continue
				}
				jw.mu.Lock()
				jw.state[e.Key()] = j.State
				if j.State == cluster.StateDone {
					jw.jobs[e.Key()] = &j
				}
				for _, ch := range jw.waiters[e.Key()] {
					close(ch)
				}
				delete(jw.waiters, e.Key())
				jw.mu.Unlock()
			}
		}
	}()
	return jw
}

// until waits until job id's state satisfies ok.
func (jw *jobWatch) until(ctx context.Context, id string, ok func(cluster.JobState) bool) error {
	for {
		jw.mu.Lock()
		if ok(jw.state[id]) {
			jw.mu.Unlock()
			return nil
		}
		ch := make(chan struct{})
		jw.waiters[id] = append(jw.waiters[id], ch)
		jw.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", id, ctx.Err())
		case <-ch:
		}
	}
}

func (f *recordingFleet) Wait(ctx context.Context, id string) (*cluster.Job, error) {
	if f.watch == nil {
		return f.Client.Wait(ctx, id)
	}
	if err := f.watch.until(ctx, id, func(s cluster.JobState) bool { return s == cluster.StateDone }); err != nil {
		return nil, err
	}
	f.watch.mu.Lock()
	defer f.watch.mu.Unlock()
	return f.watch.jobs[id], nil
}

func (f *recordingFleet) Log(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error) {
	if f.watch != nil && follow {
		if err := f.watch.until(ctx, id, func(s cluster.JobState) bool { return s == cluster.StateRunning || s == cluster.StateDone }); err != nil {
			return offset, err
		}
	}
	return f.Client.Log(ctx, id, offset, follow, w)
}
