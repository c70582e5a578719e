package registry

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/registry/registrytest"
)

// TestCosignVerify checks the signatures with the real cosign (registrytest.Cosign).
func TestCosignVerify(t *testing.T) {
	bin := registrytest.Cosign(t)
	c, reg := client(t)
	ctx := context.Background()
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	if err := GenerateKey(key, pub); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	repo := reg.Repo("cosign/a")
	d := pushedImage(t, c, repo, "signed")
	if err := c.Sign(ctx, repo, d, s); err != nil {
		t.Fatal(err)
	}
	unsigned := pushedImage(t, c, repo, "unsigned")
	forged := pushedImage(t, c, repo, "forged")
	if err := c.Tag(ctx, repo, mustDigest(t, c, repo+":"+signatureTag(d)), signatureTag(forged)); err != nil {
		t.Fatal(err)
	}
	sbom, err := SBOM{Name: repo + ":signed", Subject: d, Packages: []Package{{Name: "bash", Version: "5.2.15-2+b7"}}}.SPDX()
	if err != nil {
		t.Fatal(err)
	}
	attestation, err := c.Attach(ctx, repo, d, SPDXArtifactType, sbom, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sign(ctx, repo, attestation, s); err != nil {
		t.Fatal(err)
	}
	config := reg.DockerConfig(t)
	for _, tc := range []struct {
		name, ref string
		ok        bool
		why       string // in cosign's output when it refuses
	}{
		{"signed tag", repo + ":signed", true, ""},
		{"signed digest", repo + "@" + d.String(), true, ""},
		{"signed SBOM", repo + "@" + attestation.String(), true, ""},
		{"unsigned", repo + "@" + unsigned.String(), false, "no signatures found"},
		{"signature of another image", repo + ":forged", false, "invalid or missing digest in claim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, bin, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", tc.ref)
			cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+config, "TUF_ROOT="+filepath.Join(dir, "tuf"), "HOME="+dir)
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("cosign verify %s: %v\n%s", tc.ref, err, out)
			}
			if !tc.ok && (err == nil || !strings.Contains(string(out), tc.why)) {
				t.Fatalf("cosign verify %s: %v, want a refusal saying %q:\n%s", tc.ref, err, tc.why, out)
			}
		})
	}
}
