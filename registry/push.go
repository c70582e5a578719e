package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Push uploads img (its layers, config and manifest) to repo by digest, without a
// tag, and returns the manifest digest. Blobs the registry already has are not
// uploaded again.
func (c *Client) Push(ctx context.Context, repo string, img v1.Image) (v1.Hash, error) {
	r, err := c.repository("push", repo)
	if err != nil {
		return v1.Hash{}, err
	}
	start, before := time.Now(), c.Uploaded()
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, c.fail("push", r, fmt.Errorf("image digest: %w", err))
	}
	if err := remote.Write(r.Digest(d.String()), img, c.remote(ctx)...); err != nil {
		return v1.Hash{}, c.fail("push", r, err)
	}
	c.ok("push")
	c.log.Info("pushed image", "repository", r.Name(), "digest", d, "uploaded_bytes", c.Uploaded()-before, "duration", time.Since(start))
	return d, nil
}

// Tag points each tag of repo at the manifest digest d, which must already be in
// repo. Tags are moved one after the other; each is a single manifest PUT.
func (c *Client) Tag(ctx context.Context, repo string, d v1.Hash, tags ...string) error {
	r, err := c.repository("tag", repo)
	if err != nil {
		return err
	}
	desc, err := remote.Get(r.Digest(d.String()), c.remote(ctx)...)
	if err != nil {
		return c.fail("tag", r, fmt.Errorf("manifest %s: %w", d, err))
	}
	for _, tag := range tags {
		t := r.Tag(tag)
		if t.TagStr() != tag {
			return c.fail("tag", r, fmt.Errorf("invalid tag %q", tag))
		}
		if err := remote.Tag(t, desc, c.remote(ctx)...); err != nil {
			return c.fail("tag", r, fmt.Errorf("tag %s: %w", tag, err))
		}
		c.log.Info("tagged", "repository", r.Name(), "tag", tag, "digest", d)
	}
	c.ok("tag")
	return nil
}

// Digest returns the manifest digest that ref (REPO:TAG or REPO@DIGEST) names now,
// with a HEAD request. A missing tag is ErrNotFound.
func (c *Client) Digest(ctx context.Context, ref string) (v1.Hash, error) {
	r, err := c.reference("digest", ref)
	if err != nil {
		return v1.Hash{}, err
	}
	desc, err := remote.Head(r, c.remote(ctx)...)
	if err != nil {
		return v1.Hash{}, c.fail("digest", r.Context(), fmt.Errorf("%s: %w", r.Identifier(), err))
	}
	c.ok("digest")
	return desc.Digest, nil
}

// Manifest is one entry of a multi-architecture index: an image already pushed.
type Manifest struct {
	// Digest is the image's manifest digest.
	Digest v1.Hash
	// From is the repository the image was pushed to (a per-architecture staging
	// repository of the same registry); empty is the index's own repository. An
	// image from another repository is copied into the index's repository first
	// (its blobs mounted, not uploaded again).
	From string
	// Platform is what the image runs on (OS, architecture, variant).
	Platform v1.Platform
}

// PushIndex pushes a multi-architecture index of images already pushed and returns
// its digest. Nothing is written unless every image it names exists in repo (checked
// with HEAD after the copies from other repositories): an index never points at a
// missing image. annotations are the index's own (nil for none).
func (c *Client) PushIndex(ctx context.Context, repo string, ms []Manifest, annotations map[string]string) (v1.Hash, error) {
	r, err := c.repository("index", repo)
	if err != nil {
		return v1.Hash{}, err
	}
	if len(ms) == 0 {
		return v1.Hash{}, c.fail("index", r, fmt.Errorf("an index needs at least one image"))
	}
	for _, m := range ms {
		if m.From == "" || m.From == repo {
			continue
		}
		if err := c.copy(ctx, m.From, r, m.Digest); err != nil {
			return v1.Hash{}, c.fail("index", r, err)
		}
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Annotations: annotations}
	for _, m := range ms {
		desc, err := remote.Head(r.Digest(m.Digest.String()), c.remote(ctx)...)
		if err != nil {
			return v1.Hash{}, c.fail("index", r, fmt.Errorf("image %s (%s) is not in the repository, no index pushed: %w", m.Digest, platformString(m.Platform), err))
		}
		p := m.Platform
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest, Platform: &p})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return v1.Hash{}, c.fail("index", r, err)
	}
	d, err := c.putManifest(ctx, r, rawManifest{raw: raw, mediaType: types.OCIImageIndex})
	if err != nil {
		return v1.Hash{}, c.fail("index", r, err)
	}
	c.ok("index")
	c.log.Info("pushed index", "repository", r.Name(), "digest", d, "images", len(ms))
	return d, nil
}

// copy copies the manifest d from repository from into to (same registry: blobs are
// mounted).
func (c *Client) copy(ctx context.Context, from string, to name.Repository, d v1.Hash) error {
	src, err := c.repository("copy", from)
	if err != nil {
		return err
	}
	desc, err := remote.Get(src.Digest(d.String()), c.remote(ctx)...)
	if err != nil {
		return fmt.Errorf("image %s in %s: %w", d, from, err)
	}
	var t remote.Taggable = desc
	if desc.MediaType.IsIndex() {
		t, err = desc.ImageIndex()
	} else {
		t, err = desc.Image()
	}
	if err != nil {
		return fmt.Errorf("image %s in %s: %w", d, from, err)
	}
	if err := remote.Push(to.Digest(d.String()), t, c.remote(ctx)...); err != nil {
		return fmt.Errorf("copy %s from %s: %w", d, from, err)
	}
	return nil
}

// putManifest PUTs a manifest whose blobs are in r by digest and returns its digest.
func (c *Client) putManifest(ctx context.Context, r name.Repository, m rawManifest) (v1.Hash, error) {
	d, _, err := v1.SHA256(bytes.NewReader(m.raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(r.Digest(d.String()), m, c.remote(ctx)...); err != nil {
		return v1.Hash{}, err
	}
	return d, nil
}

// rawManifest is a manifest as bytes, for remote.Put.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Index reads the index manifest that ref names.
func (c *Client) Index(ctx context.Context, ref string) (*v1.IndexManifest, error) {
	r, err := c.reference("index", ref)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, c.remote(ctx)...)
	if err != nil {
		return nil, c.fail("index", r.Context(), err)
	}
	if !desc.MediaType.IsIndex() {
		return nil, c.fail("index", r.Context(), fmt.Errorf("%s is a %s, not an index", r.Identifier(), desc.MediaType))
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, c.fail("index", r.Context(), err)
	}
	return idx, nil
}

// Tags lists the tags of repo (none for a repository that does not exist yet).
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	r, err := c.repository("tags", repo)
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(r, c.remote(ctx)...)
	if err != nil {
		if classify(err) == ErrNotFound {
			return nil, nil
		}
		return nil, c.fail("tags", r, err)
	}
	return tags, nil
}

// IsSupplyChainTag reports whether tag is one that Attach or Sign maintain rather than
// a published image: a referrers fallback tag (sha256-<hex>) or a signature tag
// (sha256-<hex>.sig). Lists of published tags leave these out.
func IsSupplyChainTag(tag string) bool {
	hex, ok := strings.CutPrefix(tag, "sha256-")
	if !ok {
		return false
	}
	hex = strings.TrimSuffix(hex, ".sig")
	_, err := v1.NewHash("sha256:" + hex)
	return err == nil
}
