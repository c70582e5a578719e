package registry

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DeprecatedAnnotation is the manifest annotation that marks an image or index
// deprecated; its value says why (and what to use instead).
const DeprecatedAnnotation = "dev.kiln.deprecated"

// Deprecate marks the manifest that repo:tag names deprecated for reason: the same
// manifest (same images, same blobs, so it stays pullable as before) with the
// DeprecatedAnnotation added is pushed, and the tag moved to it. It returns the new
// digest; a manifest already deprecated for that reason is left as it is.
func (c *Client) Deprecate(ctx context.Context, repo, tag, reason string) (v1.Hash, error) {
	r, err := c.repository("deprecate", repo)
	if err != nil {
		return v1.Hash{}, err
	}
	if reason == "" {
		return v1.Hash{}, c.fail("deprecate", r, fmt.Errorf("tag %s: a deprecation needs a reason", tag))
	}
	desc, err := remote.Get(r.Tag(tag), c.remote(ctx)...)
	if err != nil {
		return v1.Hash{}, c.fail("deprecate", r, fmt.Errorf("tag %s: %w", tag, err))
	}
	var m map[string]any
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return v1.Hash{}, c.fail("deprecate", r, fmt.Errorf("tag %s: manifest: %w", tag, err))
	}
	ann, _ := m["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
	}
	if ann[DeprecatedAnnotation] == reason {
		return desc.Digest, nil
	}
	ann[DeprecatedAnnotation] = reason
	m["annotations"] = ann
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, c.fail("deprecate", r, err)
	}
	d, err := c.putManifest(ctx, r, rawManifest{raw: raw, mediaType: desc.MediaType})
	if err != nil {
		return v1.Hash{}, c.fail("deprecate", r, err)
	}
	if err := c.Tag(ctx, repo, d, tag); err != nil {
		return v1.Hash{}, err
	}
	c.ok("deprecate")
	c.log.Info("deprecated", "repository", r.Name(), "tag", tag, "digest", d, "reason", reason)
	return d, nil
}

// Deprecation returns why the manifest that ref names is deprecated, and "" when it
// is not.
func (c *Client) Deprecation(ctx context.Context, ref string) (string, error) {
	nr, err := c.reference("deprecation", ref)
	if err != nil {
		return "", err
	}
	desc, err := remote.Get(nr, c.remote(ctx)...)
	if err != nil {
		return "", c.fail("deprecation", nr.Context(), fmt.Errorf("%s: %w", nr.Identifier(), err))
	}
	var m struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return "", c.fail("deprecation", nr.Context(), fmt.Errorf("%s: manifest: %w", nr.Identifier(), err))
	}
	return m.Annotations[DeprecatedAnnotation], nil
}
