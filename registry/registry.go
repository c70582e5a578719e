// Package registry publishes images to OCI registries: it assembles reproducible
// images from root filesystems, pushes images and multi-architecture indexes (an
// index only once every image it names is in the registry, tags last), reads digests,
// attaches SBOMs and provenance records as OCI referrers, signs and verifies images in
// cosign's format, and marks retired images deprecated. It is the registry code of
// the base images and the deployer; see docs/registry.md.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/prometheus/client_golang/prometheus"
)

// Credentials are a registry user name and password. They print as "user:***".
type Credentials struct {
	Username string
	Password string
}

// String hides the password.
func (c Credentials) String() string { return c.Username + ":***" }

// LogValue hides the password from slog.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// ReadCredentials reads a credentials file: one line "USERNAME:PASSWORD". Errors
// name the file, never its content.
func ReadCredentials(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("registry credentials: %w", err)
	}
	user, pass, ok := strings.Cut(strings.TrimRight(string(b), "\r\n"), ":")
	if !ok || user == "" || pass == "" || strings.ContainsAny(user+pass, "\n") {
		return Credentials{}, fmt.Errorf("registry credentials %s: want one line USERNAME:PASSWORD", path)
	}
	return Credentials{Username: user, Password: pass}, nil
}

// Options configure a Client.
type Options struct {
	// Credentials for the registry; zero is anonymous.
	Credentials Credentials
	// Insecure talks plain HTTP (registries on loopback or a trusted network).
	Insecure bool
	// Registerer receives the client's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives one line per operation; nil is slog.Default().
	Logger *slog.Logger
	// Transport is the HTTP transport; nil is http.DefaultTransport.
	Transport http.RoundTripper
	// Jobs is how many blobs upload at once; 0 is go-containerregistry's default (4).
	Jobs int
}

// Client publishes to registries with one set of credentials. It is safe for
// concurrent use.
type Client struct {
	o        Options
	log      *slog.Logger
	counting *countingTransport
	ops      *prometheus.CounterVec
	uploaded prometheus.Counter
}

// New returns a client.
func New(o Options) (*Client, error) {
	c := &Client{o: o, log: o.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	base := o.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_registry_operations_total",
		Help: "Registry operations by operation and outcome (ok or the kind of failure).",
	}, []string{"op", "outcome"})
	c.uploaded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_registry_uploaded_bytes_total",
		Help: "Bytes sent to registries in request bodies (blobs and manifests).",
	})
	if o.Registerer != nil {
		var err error
		if c.ops, err = register(o.Registerer, c.ops); err != nil {
			return nil, err
		}
		if c.uploaded, err = register(o.Registerer, c.uploaded); err != nil {
			return nil, err
		}
	}
	c.counting = &countingTransport{base: base, metric: c.uploaded}
	return c, nil
}

// register registers m, or returns the collector already registered under its name.
func register[T prometheus.Collector](r prometheus.Registerer, m T) (T, error) {
	if err := r.Register(m); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(T); ok {
				return old, nil
			}
		}
		return m, fmt.Errorf("registry metrics: %w", err)
	}
	return m, nil
}

// Uploaded returns how many bytes this client has sent in request bodies so far.
func (c *Client) Uploaded() int64 { return c.counting.n.Load() }

func (c *Client) remote(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(c.counting), remote.WithRetryStatusCodes(retryStatusCodes...), remote.WithRetryPredicate(retryable)}
	if c.o.Credentials != (Credentials{}) {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: c.o.Credentials.Username, Password: c.o.Credentials.Password}))
	} else {
		opts = append(opts, remote.WithAuth(authn.Anonymous))
	}
	if c.o.Jobs > 0 {
		opts = append(opts, remote.WithJobs(c.o.Jobs))
	}
	return opts
}

// retryStatusCodes are the answers worth asking again: timeouts, rate limits and
// proxies that could not reach the registry. A 500 is the registry's own failure
// (a full disk among them); asked again, it answers with a later failure, a HEAD
// without a body, in place of the first one that said why.
var retryStatusCodes = []int{
	http.StatusRequestTimeout,
	http.StatusTooManyRequests,
	http.StatusBadGateway,
	http.StatusServiceUnavailable,
	http.StatusGatewayTimeout,
}

// retryable tells whether a failed request is worth sending again: a network
// failure or a temporary answer, but not a 500 (see retryStatusCodes).
func retryable(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode != http.StatusInternalServerError && te.Temporary()
	}
	var tmp interface{ Temporary() bool }
	return errors.As(err, &tmp) && tmp.Temporary() ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

func (c *Client) nameOpts() []name.Option {
	if c.o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// repository parses a repository name (HOST[:PORT]/PATH).
func (c *Client) repository(op, repo string) (name.Repository, error) {
	r, err := name.NewRepository(repo, c.nameOpts()...)
	if err != nil {
		return r, &Error{Op: op, Registry: registryOf(repo), Repository: repo, Err: err}
	}
	return r, nil
}

// reference parses an image reference (REPO:TAG or REPO@DIGEST).
func (c *Client) reference(op, ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, c.nameOpts()...)
	if err != nil {
		return nil, &Error{Op: op, Registry: registryOf(ref), Repository: ref, Err: err}
	}
	return r, nil
}

func registryOf(s string) string {
	host, _, _ := strings.Cut(s, "/")
	return host
}

// fail wraps err as an *Error of op on repo (kept as it is when it already is one),
// counts the outcome and returns it.
func (c *Client) fail(op string, repo name.Repository, err error) error {
	var re *Error
	if !errors.As(err, &re) {
		re = &Error{Op: op, Registry: repo.RegistryStr(), Repository: repo.RepositoryStr(), Kind: classify(err), Err: err}
		err = re
	}
	outcome := "error"
	if re.Kind != nil {
		outcome = outcomeName(re.Kind)
	}
	c.ops.WithLabelValues(op, outcome).Inc()
	// Not found is the answer callers ask for when they check whether something is
	// there already; it is counted, and the caller decides whether it is a problem.
	level := slog.LevelWarn
	if re.Kind == ErrNotFound {
		level = slog.LevelDebug
	}
	c.log.Log(context.Background(), level, "registry operation failed", "op", op, "registry", re.Registry, "repository", re.Repository, "err", err)
	return err
}

func (c *Client) ok(op string) { c.ops.WithLabelValues(op, "ok").Inc() }

func outcomeName(kind error) string {
	switch kind {
	case ErrUnreachable:
		return "unreachable"
	case ErrUnauthorized:
		return "unauthorized"
	case ErrDenied:
		return "denied"
	case ErrNotFound:
		return "not_found"
	case ErrDiskFull:
		return "disk_full"
	case ErrBadSignature:
		return "bad_signature"
	}
	return "error"
}

// countingTransport counts the bytes of request bodies.
type countingTransport struct {
	base   http.RoundTripper
	metric prometheus.Counter
	n      atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, t: t}
	}
	return t.base.RoundTrip(req)
}

type countingBody struct {
	io.ReadCloser
	t *countingTransport
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.n.Add(int64(n))
	b.t.metric.Add(float64(n))
	return n, err
}
