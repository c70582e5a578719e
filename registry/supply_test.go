package registry

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// pushedImage pushes a random image to repo, tagged tag, and returns its digest.
func pushedImage(t *testing.T, c *Client, repo, tag string) v1.Hash {
	t.Helper()
	ctx := context.Background()
	d, err := c.Push(ctx, repo, randomImage(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, repo, d, tag); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestReferrers(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	repo := reg.Repo("supply/referrers")
	d := pushedImage(t, c, repo, "latest")
	sbom := SBOM{Name: repo + ":latest", Subject: d, Created: time.Unix(1700000000, 0), Packages: []Package{
		{Name: "bash", Version: "5.2.15-2+b7", PURL: "pkg:deb/debian/bash@5.2.15-2+b7?arch=amd64"},
		{Name: "ocaml", Version: "4.13.1", PURL: "pkg:opam/ocaml@4.13.1", License: "LGPL-2.1-only"},
	}}
	sbomJSON, err := sbom.SPDX()
	if err != nil {
		t.Fatal(err)
	}
	prov, err := Provenance{Name: repo + ":latest", Subject: d, BuilderID: "https://kiln.example/baseimages",
		BuildType: "https://kiln.example/baseimages/v1", Parameters: map[string]string{"distro": "debian-12"},
		Dependencies: map[string]string{"git+https://github.com/ocaml/opam-repository": "gitCommit:0123abc"}}.InToto()
	if err != nil {
		t.Fatal(err)
	}
	sbomD, err := c.Attach(ctx, repo, d, SPDXArtifactType, sbomJSON, nil)
	if err != nil {
		t.Fatal(err)
	}
	provD, err := c.Attach(ctx, repo, d, InTotoArtifactType, prov, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Attach(ctx, repo, d, SPDXArtifactType, sbomJSON, nil); err != nil || again != sbomD {
		t.Errorf("attaching the same SBOM again = %s, %v; want %s", again, err, sbomD)
	}
	for _, tc := range []struct {
		name, artifactType string
		want               []v1.Hash
	}{
		{"all", "", []v1.Hash{sbomD, provD}},
		{"sbom", SPDXArtifactType, []v1.Hash{sbomD}},
		{"provenance", InTotoArtifactType, []v1.Hash{provD}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Referrers(ctx, repo, d, tc.artifactType)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("referrers %v, want %v", got, tc.want)
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || g.Digest == w
				}
				if !found {
					t.Errorf("referrers %v lack %s", got, w)
				}
			}
		})
	}
	if tags, _ := c.Tags(ctx, repo); !contains(tags, "sha256-"+d.Hex) {
		t.Errorf("tags %v lack the referrers fallback tag sha256-%s", tags, d.Hex)
	}
	// Attestations are signed like images.
	dir := t.TempDir()
	if err := GenerateKey(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []v1.Hash{sbomD, provD} {
		if err := c.Sign(ctx, repo, a, s); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(ctx, repo+"@"+a.String(), s.Public()); err != nil {
			t.Errorf("the signed attestation %s does not verify: %v", a, err)
		}
	}
	b, err := c.Artifact(ctx, repo, sbomD)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := ParseSPDX(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0] != sbom.Packages[0] || pkgs[1] != sbom.Packages[1] {
		t.Errorf("SBOM read back %+v, want %+v", pkgs, sbom.Packages)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func TestSignVerify(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	dir := t.TempDir()
	key, pub, otherPub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub"), filepath.Join(dir, "other.pub")
	if err := GenerateKey(key, pub); err != nil {
		t.Fatal(err)
	}
	if err := GenerateKey(filepath.Join(dir, "other.key"), otherPub); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	repo := reg.Repo("supply/signed")
	signed := pushedImage(t, c, repo, "signed")
	if err := c.Sign(ctx, repo, signed, s); err != nil {
		t.Fatal(err)
	}
	// Signing again keeps the one signature.
	if err := c.Sign(ctx, repo, signed, s); err != nil {
		t.Fatal(err)
	}
	sigs, err := c.signatures(ctx, mustRepo(t, c, repo), signed)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := sigs.Manifest(); len(m.Layers) != 1 {
		t.Errorf("signing twice left %d signatures, want 1", len(m.Layers))
	}
	// A tag moved to an unsigned image, and a signature copied from another image.
	pushedImage(t, c, repo, "moved")
	forged := pushedImage(t, c, repo, "forged")
	if err := c.Tag(ctx, repo, mustDigest(t, c, repo+":"+signatureTag(signed)), signatureTag(forged)); err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, repo, mustDigest(t, c, repo+":moved"), "moved"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ref, pub string
		ok             bool
	}{
		{"signed tag", repo + ":signed", pub, true},
		{"signed digest", repo + "@" + signed.String(), pub, true},
		{"other key", repo + ":signed", otherPub, false},
		{"unsigned image", repo + ":moved", pub, false},
		{"signature of another image", repo + ":forged", pub, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadPublicKey(tc.pub)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Verify(ctx, tc.ref, k)
			if tc.ok && err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}
}

func mustRepo(t *testing.T, c *Client, repo string) name.Repository {
	t.Helper()
	r, err := c.repository("test", repo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDigest(t *testing.T, c *Client, ref string) v1.Hash {
	t.Helper()
	d, err := c.Digest(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeprecate(t *testing.T) {
	c, reg := client(t)
	ctx := context.Background()
	repo := reg.Repo("supply/deprecated")
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Push(ctx, repo, img)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := c.PushIndex(ctx, repo, []Manifest{{Digest: d, Platform: v1.Platform{OS: "linux", Architecture: "amd64"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		of   v1.Hash
		tag  string
	}{
		{"image", d, "debian-10-ocaml-4.14"},
		{"index", idx, "debian-10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Tag(ctx, repo, tc.of, tc.tag); err != nil {
				t.Fatal(err)
			}
			if why, err := c.Deprecation(ctx, repo+":"+tc.tag); err != nil || why != "" {
				t.Fatalf("before Deprecate, Deprecation = %q, %v", why, err)
			}
			const reason = "Debian 10 is end of life; use debian-12"
			nd, err := c.Deprecate(ctx, repo, tc.tag, reason)
			if err != nil {
				t.Fatal(err)
			}
			if why, err := c.Deprecation(ctx, repo+":"+tc.tag); err != nil || why != reason {
				t.Errorf("Deprecation = %q, %v; want %q", why, err, reason)
			}
			if again, err := c.Deprecate(ctx, repo, tc.tag, reason); err != nil || again != nd {
				t.Errorf("deprecating again = %s, %v; want %s unchanged", again, err, nd)
			}
			if _, err := c.Digest(ctx, repo+"@"+d.String()); err != nil {
				t.Errorf("the image is no longer pullable: %v", err)
			}
			if tc.name == "index" {
				ix, err := c.Index(ctx, repo+":"+tc.tag)
				if err != nil || len(ix.Manifests) != 1 || ix.Manifests[0].Digest != d {
					t.Errorf("deprecated index = %+v, %v; want the same image %s", ix, err, d)
				}
			}
			if nd == tc.of {
				t.Errorf("the deprecated manifest has the digest of the old one")
			}
		})
	}
}

func TestIsSupplyChainTag(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		tag  string
		want bool
	}{
		{"sha256-" + hex, true},
		{"sha256-" + hex + ".sig", true},
		{"debian-12-ocaml-5.2", false},
		{"sha256-short", false},
		{"sha256-" + hex + ".att.sig", false},
		{"latest", false},
	} {
		t.Run(tc.tag, func(t *testing.T) {
			if got := IsSupplyChainTag(tc.tag); got != tc.want {
				t.Errorf("IsSupplyChainTag(%q) = %v, want %v", tc.tag, got, tc.want)
			}
		})
	}
}
