package builder

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/builder/spec"
)

// Health runs a tiny uncached build on base (an image reference the builder can
// resolve) proving the store and the sandbox work: a step writes a file and a second
// one reads it back. It also checks the store's free space. The fleet pauses a worker
// whose health check fails.
func (b *Builder) Health(ctx context.Context, base string) error {
	if free := freeBytes(b.store.Root()); free < b.opts.MinFree {
		return infraErr("health", fmt.Errorf("%w: %d bytes free in %s (floor %d)", ErrDiskFull, free, b.store.Root(), b.opts.MinFree))
	}
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	s := &spec.Spec{From: base, Ops: []spec.Op{
		spec.Env{Name: "KILN_HEALTH", Value: nonce},
		spec.Shell{Args: []string{"/bin/sh", "-c"}},
		spec.Run{Shell: "echo $KILN_HEALTH > /kiln-health"},
		spec.Run{Shell: "cat /kiln-health"},
	}}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	id, err := b.Build(ctx, s, BuildContext{}, &log)
	if err != nil {
		return fmt.Errorf("health check: %w\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), nonce+"\n") {
		return infraErr("health", fmt.Errorf("health check: the sandbox did not print what it wrote\n%s", log.String()))
	}
	// Drop the two health snapshots (they are never reused).
	for i := 0; i < 2 && id != ""; i++ {
		m, ok, _ := b.store.Get(id)
		if !ok {
			break
		}
		b.store.Remove(id)
		id = m.Parent
	}
	return nil
}
