package results

import (
	"context"
	"fmt"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
)

// HeadOp is the operation (named name) that records each ref's head in idx as the
// pipeline sees it, for the repository pages and the histories.
func HeadOp(name string, idx *Index) *current.Op[forge.Ref, current.Unit] {
	return &current.Op[forge.Ref, current.Unit]{
		Name:    name,
		Publish: true,
		Key:     forge.Ref.Key,
		Label: func(r forge.Ref) string {
			c := r.Commit
			if len(c) > 12 {
				c = c[:12]
			}
			return "head " + r.Name + " " + c
		},
		Run: func(ctx context.Context, j *current.Job, r forge.Ref) (current.Unit, error) {
			if err := idx.SetHead(ctx, r); err != nil {
				return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
			}
			return current.Unit{}, nil
		},
	}
}
