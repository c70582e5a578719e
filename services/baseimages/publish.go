package baseimages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-ci/kiln/registry"
)

// Publisher publishes built images: each architecture's image to the staging
// repository, then a multi-arch index per tag on the public repository, with the
// images' SBOMs and provenance attached and everything signed.
type Publisher struct {
	Client     *registry.Client
	Repository string
	Staging    string
	// Signer, when set, signs images, indexes and attestations.
	Signer   *registry.Signer
	Exporter *Exporter
}

// Report says what a publication did.
type Report struct {
	// Pushed are the per-architecture images pushed; Present those the staging
	// repository had already.
	Pushed, Present []string
	// Tags are the tags moved to a new index, with why (the inputs that moved);
	// Unchanged the tags that already pointed at the right index.
	Tags      map[string][]string
	Unchanged []string
	// Deprecated are the tags newly marked deprecated.
	Deprecated []string
	// Digests are the index digest of each tag published or unchanged.
	Digests map[string]string
}

// Publish pushes builds and points tags at their indexes. Every image is pushed
// before any index, and an index is pushed only over images the repository holds,
// so a failure leaves no tag pointing at a missing image. old is the index of the
// previous publication (for why a tag moved); log gets one line per action.
func (p *Publisher) Publish(ctx context.Context, log io.Writer, plan Plan, builds map[string]Built, old *Index) (Report, error) {
	rep := Report{Tags: map[string][]string{}, Digests: map[string]string{}}
	byImage := map[string][]Built{}
	for _, b := range plan.Builds {
		bt, ok := builds[b.Name()]
		if !ok {
			return rep, fmt.Errorf("publish: %s was not built", b.Name())
		}
		byImage[b.Image.Name()] = append(byImage[b.Image.Name()], bt)
	}
	// 1. Every per-architecture image in the staging repository.
	for _, b := range plan.Builds {
		bt := builds[b.Name()]
		d, err := v1.NewHash(bt.Digest)
		if err != nil {
			return rep, err
		}
		if _, err := p.Client.Digest(ctx, p.Staging+"@"+bt.Digest); err == nil {
			rep.Present = append(rep.Present, b.Name())
			continue
		} else if !errors.Is(err, registry.ErrNotFound) {
			return rep, fmt.Errorf("publish %s: %w", b.Name(), err)
		}
		img, err := p.Exporter.Image(bt.Digest)
		if err != nil {
			return rep, fmt.Errorf("publish %s: the exported image: %w", b.Name(), err)
		}
		if _, err := p.Client.Push(ctx, p.Staging, img); err != nil {
			return rep, fmt.Errorf("publish %s: %w", b.Name(), err)
		}
		if err := p.Client.Tag(ctx, p.Staging, d, b.Name()); err != nil {
			return rep, fmt.Errorf("publish %s: %w", b.Name(), err)
		}
		fmt.Fprintf(log, "pushed %s (%s) to %s\n", b.Name(), bt.Digest, p.Staging)
		rep.Pushed = append(rep.Pushed, b.Name())
	}
	// 2. Indexes and tags of the active images.
	indexes := map[string]v1.Hash{} // by image name
	for _, t := range plan.Tags {
		if t.Deprecated != "" {
			continue
		}
		bts := byImage[t.Image]
		idx, ok := indexes[t.Image]
		if !ok {
			var ms []registry.Manifest
			for _, bt := range bts {
				a, _ := LookupArch(bt.Arch)
				d, _ := v1.NewHash(bt.Digest)
				ms = append(ms, registry.Manifest{Digest: d, From: p.Staging, Platform: v1.Platform{OS: "linux", Architecture: a.OCIArch, Variant: a.Variant}})
			}
			if cur, err := p.Client.Index(ctx, p.Repository+":"+t.Image); err == nil && sameIndex(cur, ms) {
				idx, _ = p.Client.Digest(ctx, p.Repository+":"+t.Image)
			} else {
				var err error
				if idx, err = p.Client.PushIndex(ctx, p.Repository, ms, map[string]string{"org.opencontainers.image.title": t.Image}); err != nil {
					return rep, fmt.Errorf("publish %s: %w", t.Name, err)
				}
				if err := p.attest(ctx, bts); err != nil {
					return rep, fmt.Errorf("publish %s: %w", t.Image, err)
				}
				if p.Signer != nil {
					if err := p.Client.Sign(ctx, p.Repository, idx, p.Signer); err != nil {
						return rep, fmt.Errorf("publish %s: %w", t.Image, err)
					}
				}
			}
			indexes[t.Image] = idx
		}
		rep.Digests[t.Name] = idx.String()
		if cur, err := p.Client.Digest(ctx, p.Repository+":"+t.Name); err == nil && cur == idx {
			rep.Unchanged = append(rep.Unchanged, t.Name)
			continue
		}
		if err := p.Client.Tag(ctx, p.Repository, idx, t.Name); err != nil {
			return rep, fmt.Errorf("publish %s: %w", t.Name, err)
		}
		rep.Tags[t.Name] = why(old, t, bts)
		fmt.Fprintf(log, "tagged %s:%s -> %s (%s)\n", p.Repository, t.Name, idx, joinOr(rep.Tags[t.Name], "new"))
	}
	// 3. Retired images keep their tags, marked deprecated.
	for _, t := range plan.Tags {
		if t.Deprecated == "" {
			continue
		}
		cur, err := p.Client.Digest(ctx, p.Repository+":"+t.Name)
		if errors.Is(err, registry.ErrNotFound) {
			continue // never published
		} else if err != nil {
			return rep, fmt.Errorf("deprecate %s: %w", t.Name, err)
		}
		d, err := p.Client.Deprecate(ctx, p.Repository, t.Name, t.Deprecated)
		if err != nil {
			return rep, fmt.Errorf("deprecate %s: %w", t.Name, err)
		}
		rep.Digests[t.Name] = d.String()
		if d != cur {
			rep.Deprecated = append(rep.Deprecated, t.Name)
			fmt.Fprintf(log, "deprecated %s:%s (%s)\n", p.Repository, t.Name, t.Deprecated)
		}
	}
	return rep, nil
}

// attest attaches each image's SBOM and provenance in the public repository and
// signs the image and both attestations.
func (p *Publisher) attest(ctx context.Context, bts []Built) error {
	for _, bt := range bts {
		d, _ := v1.NewHash(bt.Digest)
		var signed []v1.Hash
		for _, a := range []struct {
			kind string
			data []byte
		}{{registry.SPDXArtifactType, bt.SBOM}, {registry.InTotoArtifactType, bt.Provenance}} {
			ad, err := p.Client.Attach(ctx, p.Repository, d, a.kind, a.data, nil)
			if err != nil {
				return err
			}
			signed = append(signed, ad)
		}
		if p.Signer == nil {
			continue
		}
		for _, s := range append([]v1.Hash{d}, signed...) {
			if err := p.Client.Sign(ctx, p.Repository, s, p.Signer); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameIndex says whether an index lists exactly the images ms, and is not deprecated.
func sameIndex(idx *v1.IndexManifest, ms []registry.Manifest) bool {
	if len(idx.Manifests) != len(ms) || idx.Annotations[registry.DeprecatedAnnotation] != "" {
		return false
	}
	var a, b []string
	for _, d := range idx.Manifests {
		a = append(a, d.Digest.String())
	}
	for _, m := range ms {
		b = append(b, m.Digest.String())
	}
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// why says which inputs moved for a tag since the previous publication.
func why(old *Index, t Tag, bts []Built) []string {
	if old == nil {
		return nil
	}
	prev, ok := old.Tags[t.Name]
	if !ok {
		return nil
	}
	var out []string
	if prev.Image != t.Image {
		out = append(out, "now "+t.Image+", was "+prev.Image)
	}
	for _, bt := range bts {
		pa, ok := prev.Arches[bt.Arch]
		if !ok {
			out = append(out, bt.Arch+" added")
			continue
		}
		for _, m := range bt.Inputs.Moved(pa.Inputs) {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out
}

func joinOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	s := xs[0]
	for _, x := range xs[1:] {
		s += "; " + x
	}
	return s
}

// now is the clock of the index's "last changed" dates.
var now = time.Now
