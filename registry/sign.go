package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// cosign's signature format: a manifest tagged sha256-<hex>.sig in the image's
// repository whose layers are simple signing payloads, each with its signature
// (base64 of an ASN.1 ECDSA signature of the payload's sha256) in an annotation.
const (
	simpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	signatureAnnotation    = "dev.cosignproject.cosign/signature"
	simpleSigningType      = "cosign container image signature"
)

// simpleSigning is the payload signed for an image.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Signer signs manifests with an ECDSA P-256 key.
type Signer struct{ key *ecdsa.PrivateKey }

// LoadSigner reads an unencrypted ECDSA P-256 private key from a PEM file ("EC
// PRIVATE KEY" or PKCS #8 "PRIVATE KEY"). Errors name the file, never the key.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	var key any
	switch blk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("signing key %s: PEM block %q, want an unencrypted EC PRIVATE KEY or PRIVATE KEY", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s: not an ECDSA P-256 key", path)
	}
	return &Signer{key: k}, nil
}

// Public returns the signer's public key.
func (s *Signer) Public() *ecdsa.PublicKey { return &s.key.PublicKey }

// LoadPublicKey reads an ECDSA P-256 public key from a PEM file ("PUBLIC KEY", the
// form of cosign's .pub files).
func LoadPublicKey(path string) (*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key %s: want a PEM PUBLIC KEY block", path)
	}
	key, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	k, ok := key.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key %s: not an ECDSA P-256 key", path)
	}
	return k, nil
}

// GenerateKey writes a new ECDSA P-256 key pair: the private key (PKCS #8, mode 0600)
// to privPath and the public key (the file cosign verify --key takes) to pubPath.
func GenerateKey(privPath, pubPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	return nil
}

// signatureTag is the tag of the signatures of manifest d.
func signatureTag(d v1.Hash) string { return d.Algorithm + "-" + d.Hex + ".sig" }

// Sign signs the manifest d of repo (an image, an index or an attached artifact) in
// cosign's format: a simple signing payload naming repo and d, its signature added to
// the manifest tagged sha256-<hex>.sig. A manifest already signed with this key is
// left as it is.
func (c *Client) Sign(ctx context.Context, repo string, d v1.Hash, s *Signer) error {
	r, err := c.repository("sign", repo)
	if err != nil {
		return err
	}
	if _, err := remote.Head(r.Digest(d.String()), c.remote(ctx)...); err != nil {
		return c.fail("sign", r, fmt.Errorf("manifest %s: %w", d, err))
	}
	sigs, err := c.signatures(ctx, r, d)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return c.fail("sign", r, err)
	}
	if sigs != nil {
		if checkSignatures(ctx, c, r, sigs, d, s.Public()) == nil {
			c.ok("sign")
			return nil
		}
	} else {
		sigs = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	var p simpleSigning
	p.Critical.Identity.DockerReference = r.Name()
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = simpleSigningType
	payload, err := json.Marshal(p)
	if err != nil {
		return c.fail("sign", r, err)
	}
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, sum[:])
	if err != nil {
		return c.fail("sign", r, err)
	}
	sigs, err = mutate.Append(sigs, mutate.Addendum{
		Layer:       static.NewLayer(payload, simpleSigningMediaType),
		Annotations: map[string]string{signatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return c.fail("sign", r, err)
	}
	if err := remote.Write(r.Tag(signatureTag(d)), sigs, c.remote(ctx)...); err != nil {
		return c.fail("sign", r, err)
	}
	c.ok("sign")
	c.log.Info("signed", "repository", r.Name(), "digest", d)
	return nil
}

// signatures returns the signature image of d (ErrNotFound when unsigned).
func (c *Client) signatures(ctx context.Context, r name.Repository, d v1.Hash) (v1.Image, error) {
	img, err := remote.Image(r.Tag(signatureTag(d)), c.remote(ctx)...)
	if err != nil {
		if classify(err) == ErrNotFound {
			return nil, fmt.Errorf("%s has no signature (no tag %s): %w", d, signatureTag(d), ErrNotFound)
		}
		return nil, fmt.Errorf("signatures of %s: %w", d, err)
	}
	return img, nil
}

// Verify checks that ref (REPO:TAG or REPO@DIGEST) names now a manifest signed by
// pub in cosign's format, and returns its digest. A missing or wrong signature is
// ErrBadSignature.
func (c *Client) Verify(ctx context.Context, ref string, pub *ecdsa.PublicKey) (v1.Hash, error) {
	nr, err := c.reference("verify", ref)
	if err != nil {
		return v1.Hash{}, err
	}
	r := nr.Context()
	desc, err := remote.Head(nr, c.remote(ctx)...)
	if err != nil {
		return v1.Hash{}, c.fail("verify", r, fmt.Errorf("%s: %w", nr.Identifier(), err))
	}
	sigs, err := c.signatures(ctx, r, desc.Digest)
	if errors.Is(err, ErrNotFound) {
		return v1.Hash{}, c.fail("verify", r, &Error{Op: "verify", Registry: r.RegistryStr(), Repository: r.RepositoryStr(), Kind: ErrBadSignature, Err: err})
	}
	if err != nil {
		return v1.Hash{}, c.fail("verify", r, err)
	}
	if err := checkSignatures(ctx, c, r, sigs, desc.Digest, pub); err != nil {
		return v1.Hash{}, c.fail("verify", r, &Error{Op: "verify", Registry: r.RegistryStr(), Repository: r.RepositoryStr(), Kind: ErrBadSignature, Err: fmt.Errorf("%s (%s): %w", nr.Identifier(), desc.Digest, err)})
	}
	c.ok("verify")
	return desc.Digest, nil
}

// checkSignatures returns nil when one of the signatures in sigs is a valid signature
// by pub of a payload naming d, otherwise why none is.
func checkSignatures(ctx context.Context, c *Client, r name.Repository, sigs v1.Image, d v1.Hash, pub *ecdsa.PublicKey) error {
	m, err := sigs.Manifest()
	if err != nil {
		return err
	}
	var why []string
	for _, l := range m.Layers {
		if l.MediaType != simpleSigningMediaType {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(l.Annotations[signatureAnnotation])
		if err != nil || len(sig) == 0 {
			why = append(why, "a payload without a signature")
			continue
		}
		payload, err := c.blob(ctx, r, l.Digest)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(payload)
		if !ecdsa.VerifyASN1(pub, sum[:], sig) {
			why = append(why, "a signature not made by this key or of another payload")
			continue
		}
		var p simpleSigning
		if err := json.Unmarshal(payload, &p); err != nil {
			why = append(why, "an unreadable payload")
			continue
		}
		if p.Critical.Type != simpleSigningType || p.Critical.Image.DockerManifestDigest != d.String() {
			why = append(why, "a signed payload for "+p.Critical.Image.DockerManifestDigest)
			continue
		}
		return nil
	}
	if len(why) == 0 {
		return fmt.Errorf("no signature")
	}
	return fmt.Errorf("no valid signature of %s: %s", d, strings.Join(why, "; "))
}
