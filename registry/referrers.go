package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Artifact types of the referrers kiln attaches.
const (
	// SPDXArtifactType is an SBOM in SPDX 2.3 JSON.
	SPDXArtifactType = "application/spdx+json"
	// InTotoArtifactType is an in-toto statement (the provenance record).
	InTotoArtifactType = "application/vnd.in-toto+json"
)

// emptyConfig is the OCI empty descriptor's content, the config of artifacts.
var emptyConfig = static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")

// Attach pushes data (of artifactType, stored as one blob of that media type) as an
// OCI artifact whose subject is the manifest subject in repo, and returns the
// artifact's manifest digest. Registries without the referrers API (docker-registry
// 2.8) get the artifact listed under the fallback tag sha256-<hex of subject>.
// Attaching the same data again changes nothing.
func (c *Client) Attach(ctx context.Context, repo string, subject v1.Hash, artifactType string, data []byte, annotations map[string]string) (v1.Hash, error) {
	r, err := c.repository("attach", repo)
	if err != nil {
		return v1.Hash{}, err
	}
	sub, err := remote.Head(r.Digest(subject.String()), c.remote(ctx)...)
	if err != nil {
		return v1.Hash{}, c.fail("attach", r, fmt.Errorf("subject %s: %w", subject, err))
	}
	blob := static.NewLayer(data, types.MediaType(artifactType))
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Subject:       &v1.Descriptor{MediaType: sub.MediaType, Size: sub.Size, Digest: sub.Digest},
		Annotations:   annotations,
	}
	for i, l := range []v1.Layer{emptyConfig, blob} {
		if err := remote.WriteLayer(r, l, c.remote(ctx)...); err != nil {
			return v1.Hash{}, c.fail("attach", r, err)
		}
		d, _ := l.Digest()
		mt, _ := l.MediaType()
		size, _ := l.Size()
		desc := v1.Descriptor{MediaType: mt, Size: size, Digest: d}
		if i == 0 {
			desc.Data = []byte("{}")
			m.Config = desc
		} else {
			m.Layers = append(m.Layers, desc)
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, c.fail("attach", r, err)
	}
	d, err := c.putManifest(ctx, r, rawManifest{raw: raw, mediaType: types.OCIManifestSchema1})
	if err != nil {
		return v1.Hash{}, c.fail("attach", r, err)
	}
	c.ok("attach")
	c.log.Info("attached", "repository", r.Name(), "subject", subject, "artifact_type", artifactType, "digest", d)
	return d, nil
}

// Referrers lists the artifacts attached to the manifest subject in repo, only those
// of artifactType unless it is empty, by digest order.
func (c *Client) Referrers(ctx context.Context, repo string, subject v1.Hash, artifactType string) ([]v1.Descriptor, error) {
	r, err := c.repository("referrers", repo)
	if err != nil {
		return nil, err
	}
	opts := c.remote(ctx)
	if artifactType != "" {
		opts = append(opts, remote.WithFilter("artifactType", artifactType))
	}
	idx, err := remote.Referrers(r.Digest(subject.String()), opts...)
	if err != nil {
		return nil, c.fail("referrers", r, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, c.fail("referrers", r, err)
	}
	var out []v1.Descriptor
	for _, d := range im.Manifests {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest.String() < out[j].Digest.String() })
	return out, nil
}

// Artifact returns the content of the artifact manifest d of repo (its first blob).
func (c *Client) Artifact(ctx context.Context, repo string, d v1.Hash) ([]byte, error) {
	r, err := c.repository("artifact", repo)
	if err != nil {
		return nil, err
	}
	b, err := c.firstBlob(ctx, r, d.String())
	if err != nil {
		return nil, c.fail("artifact", r, err)
	}
	return b, nil
}

// firstBlob reads the manifest ref (digest or tag) of r and its first layer's blob.
func (c *Client) firstBlob(ctx context.Context, r name.Repository, ref string) ([]byte, error) {
	m, err := c.manifest(ctx, r, ref)
	if err != nil {
		return nil, err
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("manifest %s has no blob", ref)
	}
	return c.blob(ctx, r, m.Layers[0].Digest)
}

func (c *Client) manifest(ctx context.Context, r name.Repository, ref string) (*v1.Manifest, error) {
	var nr name.Reference = r.Tag(ref)
	if _, err := v1.NewHash(ref); err == nil {
		nr = r.Digest(ref)
	}
	desc, err := remote.Get(nr, c.remote(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", ref, err)
	}
	return v1.ParseManifest(bytes.NewReader(desc.Manifest))
}

const maxBlob = 64 << 20

func (c *Client) blob(ctx context.Context, r name.Repository, d v1.Hash) ([]byte, error) {
	l, err := remote.Layer(r.Digest(d.String()), c.remote(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxBlob+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if len(b) > maxBlob {
		return nil, fmt.Errorf("blob %s is larger than %d bytes", d, maxBlob)
	}
	return b, nil
}

// Package is one entry of an SBOM.
type Package struct {
	Name    string
	Version string
	// PURL is the package URL (pkg:deb/debian/bash@5.2.15-2?arch=amd64,
	// pkg:opam/ocaml@5.2.1); empty for none.
	PURL string
	// Supplier is "Organization: NAME" or "Person: NAME"; empty is NOASSERTION.
	Supplier string
	// License is an SPDX license expression; empty is NOASSERTION.
	License string
}

// SBOM is what an SPDX document says of an image.
type SBOM struct {
	// Name names the image (REPO:TAG).
	Name string
	// Subject is the image's manifest digest.
	Subject v1.Hash
	// Created is the document's date (the image's epoch, for reproducible SBOMs).
	Created time.Time
	// Packages is what the image contains.
	Packages []Package
}

// SPDX renders s as an SPDX 2.3 JSON document: the image as a package (its digest
// as a checksum) that CONTAINS each package, in the order given.
func (s SBOM) SPDX() ([]byte, error) {
	type ref struct {
		Category string `json:"referenceCategory"`
		Type     string `json:"referenceType"`
		Locator  string `json:"referenceLocator"`
	}
	type checksum struct {
		Algorithm string `json:"algorithm"`
		Value     string `json:"checksumValue"`
	}
	type pkg struct {
		ID               string     `json:"SPDXID"`
		Name             string     `json:"name"`
		Version          string     `json:"versionInfo,omitempty"`
		Supplier         string     `json:"supplier"`
		Download         string     `json:"downloadLocation"`
		FilesAnalyzed    bool       `json:"filesAnalyzed"`
		LicenseConcluded string     `json:"licenseConcluded"`
		LicenseDeclared  string     `json:"licenseDeclared"`
		Copyright        string     `json:"copyrightText"`
		Checksums        []checksum `json:"checksums,omitempty"`
		Refs             []ref      `json:"externalRefs,omitempty"`
		Purpose          string     `json:"primaryPackagePurpose,omitempty"`
	}
	type rel struct {
		Element string `json:"spdxElementId"`
		Type    string `json:"relationshipType"`
		Related string `json:"relatedSpdxElement"`
	}
	orNone := func(s string) string {
		if s == "" {
			return "NOASSERTION"
		}
		return s
	}
	image := pkg{ID: "SPDXRef-Image", Name: s.Name, Version: s.Subject.String(), Supplier: "NOASSERTION",
		Download: "NOASSERTION", LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION",
		Copyright: "NOASSERTION", Purpose: "CONTAINER",
		Checksums: []checksum{{Algorithm: "SHA256", Value: s.Subject.Hex}}}
	pkgs := []pkg{image}
	rels := []rel{{"SPDXRef-DOCUMENT", "DESCRIBES", image.ID}}
	for i, p := range s.Packages {
		if p.Name == "" {
			return nil, fmt.Errorf("SBOM of %s: package %d has no name", s.Name, i)
		}
		sp := pkg{ID: "SPDXRef-Package-" + strconv.Itoa(i+1), Name: p.Name, Version: p.Version,
			Supplier: orNone(p.Supplier), Download: "NOASSERTION", LicenseConcluded: "NOASSERTION",
			LicenseDeclared: orNone(p.License), Copyright: "NOASSERTION"}
		if p.PURL != "" {
			sp.Refs = []ref{{"PACKAGE-MANAGER", "purl", p.PURL}}
		}
		pkgs = append(pkgs, sp)
		rels = append(rels, rel{image.ID, "CONTAINS", sp.ID})
	}
	doc := map[string]any{
		"spdxVersion":       "SPDX-2.3",
		"dataLicense":       "CC0-1.0",
		"SPDXID":            "SPDXRef-DOCUMENT",
		"name":              s.Name,
		"documentNamespace": "https://spdx.org/spdxdocs/kiln/" + s.Subject.Hex,
		"creationInfo": map[string]any{
			"created":  s.Created.UTC().Format(time.RFC3339),
			"creators": []string{"Tool: kiln"},
		},
		"packages":      pkgs,
		"relationships": rels,
	}
	return json.MarshalIndent(doc, "", "  ")
}

// ParseSPDX reads the packages back from an SPDX JSON document (name, version, purl),
// the image itself left out.
func ParseSPDX(b []byte) ([]Package, error) {
	var doc struct {
		Version  string `json:"spdxVersion"`
		Packages []struct {
			ID       string `json:"SPDXID"`
			Name     string `json:"name"`
			Version  string `json:"versionInfo"`
			Supplier string `json:"supplier"`
			License  string `json:"licenseDeclared"`
			Refs     []struct {
				Type    string `json:"referenceType"`
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("SPDX document: %w", err)
	}
	if doc.Version != "SPDX-2.3" {
		return nil, fmt.Errorf("SPDX document: version %q, want SPDX-2.3", doc.Version)
	}
	var out []Package
	for _, p := range doc.Packages {
		if p.ID == "SPDXRef-Image" {
			continue
		}
		q := Package{Name: p.Name, Version: p.Version}
		if p.Supplier != "NOASSERTION" {
			q.Supplier = p.Supplier
		}
		if p.License != "NOASSERTION" {
			q.License = p.License
		}
		for _, r := range p.Refs {
			if r.Type == "purl" {
				q.PURL = r.Locator
			}
		}
		out = append(out, q)
	}
	return out, nil
}

// Provenance is how an image was built, rendered as an in-toto statement with a SLSA
// provenance v1 predicate.
type Provenance struct {
	// Name and Subject name the image (REPO:TAG and its manifest digest).
	Name    string
	Subject v1.Hash
	// BuilderID identifies what built it (kiln's base images service, a URL).
	BuilderID string
	// BuildType identifies the kind of build (a URL describing the parameters).
	BuildType string
	// Parameters are the build's inputs by name (distro, OCaml version, the builder
	// spec's digest, …).
	Parameters map[string]string
	// Dependencies are the resolved inputs: URI → digest ("sha256:…", "gitCommit:…").
	Dependencies map[string]string
	// Started and Finished bound the build; zero leaves them out.
	Started, Finished time.Time
}

// InToto renders p as an in-toto statement (JSON).
func (p Provenance) InToto() ([]byte, error) {
	type dep struct {
		URI    string            `json:"uri"`
		Digest map[string]string `json:"digest"`
	}
	var deps []dep
	uris := make([]string, 0, len(p.Dependencies))
	for u := range p.Dependencies {
		uris = append(uris, u)
	}
	sort.Strings(uris)
	for _, u := range uris {
		alg, val, ok := strings.Cut(p.Dependencies[u], ":")
		if !ok {
			return nil, fmt.Errorf("provenance of %s: dependency %s: digest %q is not ALGORITHM:VALUE", p.Name, u, p.Dependencies[u])
		}
		deps = append(deps, dep{URI: u, Digest: map[string]string{alg: val}})
	}
	meta := map[string]string{}
	if !p.Started.IsZero() {
		meta["startedOn"] = p.Started.UTC().Format(time.RFC3339)
	}
	if !p.Finished.IsZero() {
		meta["finishedOn"] = p.Finished.UTC().Format(time.RFC3339)
	}
	st := map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": p.Name, "digest": map[string]string{p.Subject.Algorithm: p.Subject.Hex}}},
		"predicateType": "https://slsa.dev/provenance/v1",
		"predicate": map[string]any{
			"buildDefinition": map[string]any{
				"buildType":            p.BuildType,
				"externalParameters":   p.Parameters,
				"resolvedDependencies": deps,
			},
			"runDetails": map[string]any{
				"builder":  map[string]string{"id": p.BuilderID},
				"metadata": meta,
			},
		},
	}
	return json.MarshalIndent(st, "", "  ")
}
