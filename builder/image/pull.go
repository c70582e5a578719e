package image

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func (s *Store) pullKey(ref string) string { return "oci:" + ref + "#linux/" + s.Arch }

// Pull fetches a registry image, even when the reference was resolved before, and
// returns it as a base. Images already stored (same digest) are not unpacked again.
func (s *Store) Pull(ctx context.Context, ref string) (Base, error) {
	v, err, _ := s.flight.Do("pull "+ref, func() (any, error) { return s.pull(ctx, ref) })
	if err != nil {
		return Base{}, err
	}
	return v.(Base), nil
}

func (s *Store) pull(ctx context.Context, ref string) (Base, error) {
	var nopts []name.Option
	if s.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return Base{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	img, err := remote.Image(r,
		remote.WithContext(ctx),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: s.Arch}),
		remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return Base{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	dig, err := img.Digest()
	if err != nil {
		return Base{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	id := dig.String()
	key := s.pullKey(ref)
	if b, err := s.Get(id); err == nil {
		if err := s.withLock(func() error { return s.setRef(key, refEntry{ID: id}) }); err != nil {
			return Base{}, err
		}
		return b, nil
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Base{}, fmt.Errorf("pull %s: config: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Base{}, fmt.Errorf("pull %s: layers: %w", ref, err)
	}
	var total int64
	for _, l := range layers {
		if n, err := l.Size(); err == nil {
			total += n
		}
	}
	cfg := Config{Env: cf.Config.Env, Workdir: cf.Config.WorkingDir, User: cf.Config.User, Arch: cf.Architecture}
	p := s.progress()
	p.Start(fmt.Sprintf("pull %s (%d layers)", ref, len(layers)), total)
	defer p.Done()
	b, err := s.install(ctx, ref, key, refEntry{}, cfg, func(ctx context.Context, rootfs string) (string, int64, error) {
		u, err := newUnpacker(rootfs)
		if err != nil {
			return "", 0, err
		}
		defer u.Close()
		for i, l := range layers {
			if err := applyLayer(ctx, u, l, p); err != nil {
				ld, _ := l.Digest()
				return "", 0, fmt.Errorf("layer %d (%s): %w", i+1, ld, err)
			}
		}
		return id, u.size, nil
	})
	if err != nil {
		return Base{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	return b, nil
}

func applyLayer(ctx context.Context, u *unpacker, l v1.Layer, p Progress) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	dr, err := decompress(countingReader{rc, p})
	if err != nil {
		return err
	}
	defer dr.Close()
	if err := u.layer(ctx, dr); err != nil {
		return err
	}
	// Drain to the end so the layer's digest is verified.
	_, err = io.Copy(io.Discard, rc)
	return err
}
