package opamenv

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-ci/kiln/opam"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// ErrNotCacheable is returned by Archives.Get for a source it cannot keep: one that is
// not an http(s) or file URL (a git or other version-control URL), or that has no
// checksum to verify it with. A build that needs it must have the network.
var ErrNotCacheable = errors.New("not a checksummed http(s) or file archive")

// ErrChecksum is wrapped by the error of an archive that does not match its opam file's
// checksums: downloading it again will not help.
var ErrChecksum = errors.New("checksum mismatch")

// ErrFetch is wrapped by the error of an archive that could not be had (network,
// missing upstream): the fault of neither the package nor the build, worth retrying.
var ErrFetch = errors.New("source archive unavailable")

// MaxArchiveBytes bounds one downloaded source archive.
const MaxArchiveBytes = 2 << 30

// Archives is the source-archive cache of a fleet, kept by the service side: each
// archive is downloaded once, verified against every checksum its opam file gives,
// and kept in opam's download-cache layout (Dir/ALGO/XX/HEX, XX the first two digits),
// under each of its checksums, so that builds never reach upstream hosts.
type Archives struct {
	dir    string
	client *http.Client
	log    *slog.Logger
	flight singleflight.Group

	lookups *prometheus.CounterVec
	bytes   prometheus.Counter
}

// ArchivesOptions configure NewArchives.
type ArchivesOptions struct {
	// Client downloads http(s) archives (default http.DefaultClient).
	Client *http.Client
	Logger *slog.Logger
	// Register takes the cache's metrics (kiln_opamenv_archive_lookups_total by result:
	// hit, download, failed; kiln_opamenv_archive_downloaded_bytes_total); nil: none.
	// The caches of several services registered on one registerer count together.
	Register prometheus.Registerer
}

// NewArchives opens (making it if needed) the archive cache in dir.
func NewArchives(dir string, o ArchivesOptions) (*Archives, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("archive cache %s: %w", dir, err)
	}
	a := &Archives{dir: dir, client: o.Client, log: o.Logger,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_opamenv_archive_lookups_total",
			Help: "Source archives asked of the fleet's archive cache, by result (hit, download, failed).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_opamenv_archive_downloaded_bytes_total",
			Help: "Bytes of source archives downloaded into the archive cache.",
		}),
	}
	if a.client == nil {
		a.client = http.DefaultClient
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if o.Register != nil {
		lookups, err := register(o.Register, a.lookups)
		if err != nil {
			return nil, err
		}
		bytes, err := register(o.Register, a.bytes)
		if err != nil {
			return nil, err
		}
		a.lookups, a.bytes = lookups, bytes
	}
	return a, nil
}

// register registers c, or returns the collector registered already under its name
// (another service's cache in the same process: both count in the same metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("archive cache metrics: %w", err)
	}
	return c, nil
}

// Dir is the cache's folder.
func (a *Archives) Dir() string { return a.dir }

// Archive is a source archive in the cache.
type Archive struct {
	// Path is the file in the cache.
	Path string
	// Checksum is the one it is kept under in opam's layout (the first of the opam file's).
	Checksum opam.Checksum
	// Hit reports whether it was in the cache already.
	Hit bool
}

// CachePath is where opam's download cache keeps a file with checksum c, relative to the cache.
func CachePath(c opam.Checksum) string {
	return filepath.Join(c.Algo, c.Hex[:2], c.Hex)
}

// Get returns the archive of a url section (or extra-source), downloading it from its
// src, then its mirrors, the first time. A download whose checksums do not all match is
// an error naming the URL and both sums.
func (a *Archives) Get(ctx context.Context, u opam.URL) (Archive, error) {
	if len(u.Checksums) == 0 || !cacheable(u.Src) {
		return Archive{}, fmt.Errorf("%s: %w", u.Src, ErrNotCacheable)
	}
	first := u.Checksums[0]
	if ar, ok := a.lookup(u.Checksums); ok {
		a.lookups.WithLabelValues("hit").Inc()
		return ar, nil
	}
	downloaded := false
	v, err, _ := a.flight.Do(first.String(), func() (any, error) {
		if ar, ok := a.lookup(u.Checksums); ok {
			return ar, nil
		}
		downloaded = true
		return a.download(ctx, u)
	})
	if err != nil {
		a.lookups.WithLabelValues("failed").Inc()
		return Archive{}, err
	}
	ar := v.(Archive)
	ar.Hit = !downloaded
	a.lookups.WithLabelValues(map[bool]string{true: "hit", false: "download"}[ar.Hit]).Inc()
	return ar, nil
}

// cacheable reports whether src is an archive the cache can fetch.
func cacheable(src string) bool {
	for _, p := range []string{"http://", "https://", "file://"} {
		if strings.HasPrefix(src, p) {
			return true
		}
	}
	return false
}

// lookup finds an archive kept under any of sums, and keeps it under the first too.
func (a *Archives) lookup(sums []opam.Checksum) (Archive, bool) {
	for _, c := range sums {
		p := filepath.Join(a.dir, CachePath(c))
		if _, err := os.Stat(p); err != nil {
			continue
		}
		want := filepath.Join(a.dir, CachePath(sums[0]))
		if p != want {
			if err := a.link(p, want); err != nil {
				continue
			}
		}
		return Archive{Path: want, Checksum: sums[0], Hit: true}, true
	}
	return Archive{}, false
}

func (a *Archives) link(from, to string) error {
	if _, err := os.Stat(to); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	if err := os.Link(from, to); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

func (a *Archives) download(ctx context.Context, u opam.URL) (Archive, error) {
	var errs []error
	for _, src := range append([]string{u.Src}, u.Mirrors...) {
		if !cacheable(src) {
			continue
		}
		ar, err := a.fetch(ctx, src, u.Checksums)
		if err == nil {
			return ar, nil
		}
		if errors.Is(err, ErrChecksum) {
			return Archive{}, err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return Archive{}, fmt.Errorf("%w: %w", ErrFetch, errors.Join(errs...))
}

// fetch downloads src into the cache, verifying it against sums.
func (a *Archives) fetch(ctx context.Context, src string, sums []opam.Checksum) (Archive, error) {
	body, err := a.open(ctx, src)
	if err != nil {
		return Archive{}, err
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Join(a.dir, "tmp"), "dl-")
	if err != nil {
		return Archive{}, fmt.Errorf("archive cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	hashes := map[string]hash.Hash{}
	writers := []io.Writer{tmp}
	for _, c := range sums {
		if hashes[c.Algo] == nil {
			hashes[c.Algo] = newHash(c.Algo)
			writers = append(writers, hashes[c.Algo])
		}
	}
	n, err := io.Copy(io.MultiWriter(writers...), io.LimitReader(body, MaxArchiveBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Archive{}, fmt.Errorf("download %s: %w", src, err)
	}
	if n > MaxArchiveBytes {
		return Archive{}, fmt.Errorf("download %s: larger than %d bytes", src, int64(MaxArchiveBytes))
	}
	for _, c := range sums {
		if got := hex.EncodeToString(hashes[c.Algo].Sum(nil)); got != c.Hex {
			return Archive{}, fmt.Errorf("download %s: %w: the opam file says %s, the archive has %s=%s", src, ErrChecksum, c, c.Algo, got)
		}
	}
	a.bytes.Add(float64(n))
	dst := filepath.Join(a.dir, CachePath(sums[0]))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Archive{}, fmt.Errorf("archive cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Archive{}, fmt.Errorf("archive cache: %w", err)
	}
	for _, c := range sums[1:] {
		if err := a.link(dst, filepath.Join(a.dir, CachePath(c))); err != nil {
			return Archive{}, fmt.Errorf("archive cache: %w", err)
		}
	}
	a.log.Info("source archive downloaded", "url", src, "bytes", n, "checksum", sums[0].String())
	return Archive{Path: dst, Checksum: sums[0]}, nil
}

func (a *Archives) open(ctx context.Context, src string) (io.ReadCloser, error) {
	if strings.HasPrefix(src, "file://") {
		p, err := url.Parse(src)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", src, err)
		}
		f, err := os.Open(p.Path)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", src, err)
		}
		return f, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src, err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", src, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("download %s: %s", src, resp.Status)
	}
	return resp.Body, nil
}

func newHash(algo string) hash.Hash {
	switch algo {
	case "md5":
		return md5.New()
	case "sha512":
		return sha512.New()
	default: // opam.ParseChecksum admits md5, sha256 and sha512 only
		return sha256.New()
	}
}
