package current_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/kiln-ci/kiln/current"
)

// A demonstration pipeline: for each commit, build it, test the build, and report.
// Each commit is its own sub-pipeline; builds and tests are cached jobs with logs.
func Example() {
	dir, _ := os.MkdirTemp("", "kiln-example")
	defer os.RemoveAll(dir)
	e, err := current.Open(current.Config{
		StateDir: dir,
		Pools:    map[string]int{"build": 2},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()

	build := &current.Op[string, string]{Name: "build", Pool: "build",
		Run: func(ctx context.Context, j *current.Job, commit string) (string, error) {
			j.Logf("building %s", commit)
			return "image-" + commit, nil
		}}
	test := &current.Op[string, bool]{Name: "test",
		Run: func(ctx context.Context, j *current.Job, image string) (bool, error) {
			j.Logf("testing %s", image)
			return true, nil
		}}

	commits := current.NewVar("commits", []string{"a1b2c3", "d4e5f6"})
	perCommit := current.ListMap(commits.Term(), func(c string) string { return c },
		func(c current.Term[string]) current.Term[string] {
			image := current.Do(build, c)
			ok := current.Do(test, image)
			return current.Map(current.Pair(image, ok), func(p current.Tuple[string, bool]) string {
				return fmt.Sprintf("%s tested=%v", p.First, p.Second)
			})
		}).Named("commits")

	results := make(chan []string, 4)
	root := current.Map(perCommit, func(rs []string) current.Unit { results <- rs; return current.Unit{} })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx, root) }()
	fmt.Println(<-results)

	commits.Set([]string{"a1b2c3", "d4e5f6", "0789ab"}) // only the new commit is built
	fmt.Println(<-results)

	cancel()
	<-done
	jobs, _ := e.Query(current.Query{Op: "build"})
	fmt.Println(len(jobs), "builds")
	// Output:
	// [image-a1b2c3 tested=true image-d4e5f6 tested=true]
	// [image-a1b2c3 tested=true image-d4e5f6 tested=true image-0789ab tested=true]
	// 3 builds
}
