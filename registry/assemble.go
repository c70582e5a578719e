package registry

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-ci/kiln/builder/image"
)

// Rootfs is where an image's root filesystem comes from: exactly one of Dir (a
// directory, archived with GNU tar as builder bases are) or Tar (an uncompressed tar
// file).
type Rootfs struct {
	Dir string
	Tar string
}

// RootfsOf is the root filesystem of a builder base.
func RootfsOf(b image.Base) Rootfs { return Rootfs{Dir: b.Rootfs} }

// ImageConfig is what an assembled image's config records besides its layers.
type ImageConfig struct {
	OS           string // "linux" when empty
	Architecture string // GOARCH naming: amd64, arm64, arm, ppc64le, …
	Variant      string // v7 for armhf, …
	Env          []string
	WorkingDir   string
	User         string
	Entrypoint   []string
	Cmd          []string
	Labels       map[string]string
	// History is the created_by of the layer's history entry.
	History string
}

// ConfigOf is the image config of a builder base (its env, workdir, user and
// architecture).
func ConfigOf(b image.Base) ImageConfig {
	return ImageConfig{Architecture: b.Config.Arch, Env: b.Config.Env, WorkingDir: b.Config.Workdir, User: b.Config.User}
}

// AssembleOptions control how a root filesystem becomes a layer.
type AssembleOptions struct {
	// Epoch is the time given to every entry and to the image's created date (the
	// SOURCE_DATE_EPOCH of reproducible builds); zero is 1970-01-01.
	Epoch time.Time
	// Noise lists what is left out as build-time noise: a pattern ending in "/"
	// drops every file and link below that folder (keeping the folders), others are
	// path.Match patterns of a whole path (no leading "/"). Nil is DefaultNoise.
	Noise []string
	// Parent, when set, is the image the layer goes on top of (a compiler image on
	// its opam image); the root filesystem is then the new layer's content.
	Parent v1.Image
	// TempDir holds the layer file; empty is os.TempDir().
	TempDir string
}

// DefaultNoise is what varies from one build of a Debian root filesystem to the next
// without being part of what it holds: logs, caches, machine ids, backups of dpkg's
// state, temporary files.
var DefaultNoise = []string{
	"var/log/", "var/cache/apt/", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old",
	"var/lib/dpkg/*-old", "var/lib/apt/lists/partial/", "tmp/", "run/", "etc/machine-id",
	"var/lib/dbus/machine-id",
}

// Assembly is an assembled image, backed by its layer file until Close.
type Assembly struct {
	Image v1.Image
	file  string
}

// Close removes the layer file; the image is unusable afterwards.
func (a *Assembly) Close() error { return os.Remove(a.file) }

// Assemble makes an image of one layer (on Parent, if set) from a root filesystem so
// that the same content always gives the same digest: entries sorted by name, every
// time set to Epoch, owners and modes kept as numbers (no user or group names),
// extended attributes kept, access and change times and the DefaultNoise dropped,
// hard links pointing at the first of their names, and a gzip stream without a time
// or a name.
func Assemble(ctx context.Context, src Rootfs, cfg ImageConfig, o AssembleOptions) (*Assembly, error) {
	if (src.Dir == "") == (src.Tar == "") {
		return nil, fmt.Errorf("assemble: give exactly one of a directory and a tar file")
	}
	what := src.Dir + src.Tar
	in := src.Tar
	if src.Dir != "" {
		f, err := os.CreateTemp(o.TempDir, "kiln-rootfs-*.tar")
		if err != nil {
			return nil, fmt.Errorf("assemble %s: %w", what, err)
		}
		defer os.Remove(f.Name())
		err = image.Base{Ref: src.Dir, Rootfs: src.Dir}.Tar(ctx, f, true)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("assemble %s: %w", what, err)
		}
		in = f.Name()
	}
	out, err := os.CreateTemp(o.TempDir, "kiln-layer-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("assemble %s: %w", what, err)
	}
	a := &Assembly{file: out.Name()}
	fail := func(err error) (*Assembly, error) {
		out.Close()
		a.Close()
		return nil, fmt.Errorf("assemble %s: %w", what, err)
	}
	zw, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		return fail(err)
	}
	if err := normaliseFile(ctx, in, zw, o); err != nil {
		return fail(err)
	}
	if err := zw.Close(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		return fail(err)
	}
	layer, err := tarball.LayerFromFile(a.file, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fail(err)
	}
	img, err := imageOf(layer, cfg, o)
	if err != nil {
		return fail(err)
	}
	a.Image = img
	return a, nil
}

// imageOf is the OCI image of the layer on o.Parent (or alone) with config cfg.
func imageOf(layer v1.Layer, cfg ImageConfig, o AssembleOptions) (v1.Image, error) {
	base := o.Parent
	if base == nil {
		base = mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	if cfg.OS == "" {
		cfg.OS = "linux"
	}
	cf.OS, cf.Architecture, cf.Variant = cfg.OS, cfg.Architecture, cfg.Variant
	cf.Created = v1.Time{Time: o.Epoch.UTC()}
	cf.Config.Env, cf.Config.WorkingDir, cf.Config.User = cfg.Env, cfg.WorkingDir, cfg.User
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Labels = cfg.Entrypoint, cfg.Cmd, cfg.Labels
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: o.Epoch.UTC()}, CreatedBy: cfg.History},
	})
}

// entry is one member of the input tar: its header and where its data starts.
type entry struct {
	hdr    *tar.Header
	offset int64
}

// normaliseFile writes the tar file in to w, normalised as Assemble says.
func normaliseFile(ctx context.Context, in string, w io.Writer, o AssembleOptions) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return normalise(ctx, io.NewSectionReader(f, 0, fi.Size()), in, w, o)
}

// normalise writes the tar f (named in, for errors) to w, normalised as Assemble says.
func normalise(ctx context.Context, f *io.SectionReader, in string, w io.Writer, o AssembleOptions) error {
	noise := o.Noise
	if noise == nil {
		noise = DefaultNoise
	}
	// First pass: the headers and data offsets; a later entry of a name replaces an
	// earlier one, as when the tar is unpacked.
	cr := &countingReader{r: f}
	tr := tar.NewReader(cr)
	byName := map[string]entry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", in, err)
		}
		name, ok := cleanEntryName(hdr.Name)
		if !ok || isNoise(name, hdr.Typeflag == tar.TypeDir, noise) {
			continue
		}
		if hdr.Typeflag == tar.TypeGNUSparse {
			return fmt.Errorf("read %s: %s is a sparse file, which is not supported", in, hdr.Name)
		}
		hdr.Name = name
		byName[name] = entry{hdr: hdr, offset: cr.n}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	// Hard links: the first name of a group in sorted order holds the data, the
	// others link to it, whichever the input tar had as the file.
	holder := map[string]string{} // name in the input that has the data → first name
	for _, n := range names {
		e := byName[n]
		if e.hdr.Typeflag != tar.TypeLink {
			continue
		}
		target, ok := cleanEntryName(e.hdr.Linkname)
		if !ok {
			return fmt.Errorf("read %s: hard link %s to %q", in, n, e.hdr.Linkname)
		}
		if _, ok := byName[target]; !ok {
			return fmt.Errorf("read %s: hard link %s to %s, which the tar does not hold", in, n, target)
		}
		first, ok := holder[target]
		if !ok {
			first = target
		}
		holder[target] = min(first, n)
	}
	tw := tar.NewWriter(w)
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := byName[n]
		hdr, data := e.hdr, e
		switch hdr.Typeflag {
		case tar.TypeLink:
			target, _ := cleanEntryName(hdr.Linkname)
			if first := holder[target]; first != n {
				hdr = normalHeader(hdr, o.Epoch)
				hdr.Linkname = first
				if err := tw.WriteHeader(hdr); err != nil {
					return err
				}
				continue
			}
			// n holds the data of the group: write it as the file it links to.
			data = byName[target]
			hdr = data.hdr
		default:
			if first, ok := holder[n]; ok && first != n {
				hdr = normalHeader(hdr, o.Epoch)
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				if err := tw.WriteHeader(hdr); err != nil {
					return err
				}
				continue
			}
		}
		h := normalHeader(hdr, o.Epoch)
		h.Name = n
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			if _, err := io.Copy(tw, io.NewSectionReader(f, data.offset, h.Size)); err != nil {
				return fmt.Errorf("read %s: %s: %w", in, n, err)
			}
		}
	}
	return tw.Close()
}

// normalHeader is hdr with only what the content is: name, type, size, mode, numeric
// owner, link target, device numbers, extended attributes, and the time epoch.
func normalHeader(hdr *tar.Header, epoch time.Time) *tar.Header {
	h := &tar.Header{
		Typeflag: hdr.Typeflag,
		Name:     hdr.Name,
		Linkname: hdr.Linkname,
		Size:     hdr.Size,
		Mode:     hdr.Mode,
		Uid:      hdr.Uid,
		Gid:      hdr.Gid,
		ModTime:  epoch.UTC(),
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		Format:   tar.FormatPAX,
	}
	if h.Typeflag == tar.TypeRegA {
		h.Typeflag = tar.TypeReg
	}
	if h.Typeflag != tar.TypeReg {
		h.Size = 0
	}
	if h.Typeflag == tar.TypeDir && !strings.HasSuffix(h.Name, "/") {
		h.Name += "/"
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[k] = v
		}
	}
	return h
}

// cleanEntryName is a tar member's name relative to the root ("./a/b/" → "a/b"); ok
// is false for the root itself. Names that would leave the root stay in it, as
// when unpacking ("../x" is "x").
func cleanEntryName(n string) (string, bool) {
	c := path.Clean("/" + n)
	if c == "/" {
		return "", false
	}
	return strings.TrimPrefix(c, "/"), true
}

func isNoise(name string, dir bool, noise []string) bool {
	for _, p := range noise {
		if strings.HasSuffix(p, "/") {
			if !dir && strings.HasPrefix(name, p) {
				return true
			}
			continue
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
