package registry

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushLayout pushes every manifest that the OCI image layout at dir lists in its
// index.json to repo by digest, without tags, and returns their digests in that
// order. An index goes after all of its images (go-containerregistry writes the
// children first and stops at the first failure), so it never points at a missing one.
func (c *Client) PushLayout(ctx context.Context, repo, dir string) ([]v1.Hash, error) {
	r, err := c.repository("push", repo)
	if err != nil {
		return nil, err
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, c.fail("push", r, fmt.Errorf("OCI layout %s: %w", dir, err))
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, c.fail("push", r, fmt.Errorf("OCI layout %s: %w", dir, err))
	}
	var out []v1.Hash
	for _, desc := range im.Manifests {
		switch {
		case desc.MediaType.IsImage():
			img, err := ii.Image(desc.Digest)
			if err != nil {
				return nil, c.fail("push", r, fmt.Errorf("OCI layout %s: image %s: %w", dir, desc.Digest, err))
			}
			if _, err := c.Push(ctx, repo, img); err != nil {
				return nil, err
			}
		case desc.MediaType.IsIndex():
			child, err := ii.ImageIndex(desc.Digest)
			if err != nil {
				return nil, c.fail("push", r, fmt.Errorf("OCI layout %s: index %s: %w", dir, desc.Digest, err))
			}
			if err := remote.WriteIndex(r.Digest(desc.Digest.String()), child, c.remote(ctx)...); err != nil {
				return nil, c.fail("push", r, fmt.Errorf("index %s: %w", desc.Digest, err))
			}
		default:
			return nil, c.fail("push", r, fmt.Errorf("OCI layout %s: %s is a %s, neither an image nor an index", dir, desc.Digest, desc.MediaType))
		}
		out = append(out, desc.Digest)
	}
	c.ok("push")
	return out, nil
}
