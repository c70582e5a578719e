package docker_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/spec"
)

// TwentyStepSpec is a spec of 20 small steps on base, for cache benchmarks.
func twentyStepSpec(base string) *spec.Spec {
	var b strings.Builder
	fmt.Fprintf(&b, "((from %s)\n (workdir /work)\n", base)
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&b, " (run (shell \"echo step %d > /work/f%d\"))\n", i, i)
	}
	b.WriteString(")")
	s, err := spec.ParseString(b.String())
	if err != nil {
		panic(err)
	}
	return s
}

func benchRunner(b *testing.B) (*docker.Runner, string) {
	e := dockertest.Engine(b)
	base := imagetest.Debian(b)
	r, err := docker.NewRunner(e, imagetest.Store(b), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return r, base.ID
}

// BenchmarkDockerBackendCached20 is a fully cached 20-step build by the Docker backend.
func BenchmarkDockerBackendCached20(b *testing.B) {
	r, _ := benchRunner(b)
	s := twentyStepSpec("kiln/debian:bookworm")
	ctx := context.Background()
	if _, err := r.Build(ctx, s, docker.Options{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		var log bytes.Buffer
		if _, err := r.Build(ctx, s, docker.Options{Log: &log}); err != nil {
			b.Fatal(err)
		}
		if strings.Count(log.String(), "from cache") != 20 {
			b.Fatalf("not fully cached:\n%s", log.String())
		}
	}
}

// BenchmarkDockerfileCached20 is `docker build` (classic builder) of the same spec
// rendered as a Dockerfile, fully cached: the reference the builder is compared with.
func BenchmarkDockerfileCached20(b *testing.B) {
	r, baseID := benchRunner(b)
	ctx := context.Background()
	// Import the base into the engine, then build FROM it.
	if _, err := r.Build(ctx, twentyStepSpec("kiln/debian:bookworm"), docker.Options{}); err != nil {
		b.Fatal(err)
	}
	s := twentyStepSpec("kiln-base:" + strings.TrimPrefix(baseID, "sha256:"))
	df := s.Dockerfile(spec.DockerfileOptions{})
	dir := b.TempDir()
	if err := r.Engine.BuildDockerfile(ctx, df, dir, "kiln-bench-20:latest", nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		var out bytes.Buffer
		if err := r.Engine.BuildDockerfile(ctx, df, dir, "kiln-bench-20:latest", &out); err != nil {
			b.Fatal(err)
		}
		if strings.Contains(out.String(), "Running in") || strings.Count(out.String(), "Using cache") < 20 {
			b.Fatalf("not fully cached:\n%s", out.String())
		}
	}
}

// BenchmarkDockerfileUncached20 is `docker build --no-cache` (classic builder) of the
// 20-step spec rendered as a Dockerfile: every step runs, the reference for the
// builder's BenchmarkUncachedSteps.
func BenchmarkDockerfileUncached20(b *testing.B) {
	r, baseID := benchRunner(b)
	ctx := context.Background()
	if _, err := r.Build(ctx, twentyStepSpec("kiln/debian:bookworm"), docker.Options{}); err != nil {
		b.Fatal(err)
	}
	df := twentyStepSpec("kiln-base:" + strings.TrimPrefix(baseID, "sha256:")).Dockerfile(spec.DockerfileOptions{})
	dir := b.TempDir()
	b.ResetTimer()
	for b.Loop() {
		var out bytes.Buffer
		if err := r.Engine.BuildDockerfile(ctx, df, dir, "kiln-bench-20u:latest", &out, "--no-cache"); err != nil {
			b.Fatal(err)
		}
		if strings.Contains(out.String(), "Using cache") {
			b.Fatalf("a step came from the cache:\n%s", out.String())
		}
	}
}
