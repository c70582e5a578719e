package baseimages

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-ci/kiln/registry"
)

// dpkgPackages reads the installed packages (name → version) of a dpkg status file.
func dpkgPackages(status string) (map[string]string, error) {
	f, err := os.Open(status)
	if err != nil {
		return nil, fmt.Errorf("dpkg status: %w", err)
	}
	defer f.Close()
	return parseDpkgStatus(bufio.NewScanner(f))
}

func parseDpkgStatus(sc *bufio.Scanner) (map[string]string, error) {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := map[string]string{}
	var name, version, state string
	flush := func() {
		if name != "" && version != "" && strings.HasSuffix(state, " installed") {
			out[name] = version
		}
		name, version, state = "", "", ""
	}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") {
			continue
		}
		switch k {
		case "Package":
			name = strings.TrimSpace(v)
		case "Version":
			version = strings.TrimSpace(v)
		case "Status":
			state = strings.TrimSpace(v)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dpkg status: %w", err)
	}
	return out, nil
}

// sbom is the SPDX document of a built image: its Debian packages with their
// versions, opam with the opam repository's commit, and the compiler.
func sbom(b Build, out Built) (json.RawMessage, error) {
	d, err := v1.NewHash(out.Digest)
	if err != nil {
		return nil, err
	}
	s := registry.SBOM{Name: b.Image.Name(), Subject: d, Created: out.Inputs.OpamDate}
	for _, name := range sortedKeys(out.Packages) {
		v := out.Packages[name]
		s.Packages = append(s.Packages, registry.Package{Name: name, Version: v, Supplier: "Organization: Debian",
			PURL: fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s&distro=%s", name, url.QueryEscape(v), b.Arch.Name, b.Image.Distro.Suite)})
	}
	s.Packages = append(s.Packages, registry.Package{Name: "opam-repository", Version: out.Inputs.OpamCommit,
		PURL: "pkg:github/ocaml/opam-repository@" + out.Inputs.OpamCommit})
	if b.Image.OCaml != "" {
		s.Packages = append(s.Packages, registry.Package{Name: "ocaml", Version: b.Image.OCaml, PURL: "pkg:opam/ocaml-system@" + b.Image.OCaml})
	}
	data, err := s.SPDX()
	return data, err
}

// provenance is the image's provenance record: its parameters and the digests of
// what it was built from.
func provenance(b Build, out Built) (json.RawMessage, error) {
	d, err := v1.NewHash(out.Digest)
	if err != nil {
		return nil, err
	}
	p := registry.Provenance{
		Name: b.Image.Name(), Subject: d,
		BuilderID: "https://github.com/kiln-ci/kiln/services/baseimages#" + b.Arch.Pool,
		BuildType: "https://github.com/kiln-ci/kiln/docs/base-images.md",
		Parameters: map[string]string{"image": b.Image.Name(), "arch": b.Arch.Name, "distro": b.Image.Distro.Name,
			"ocaml": b.Image.OCaml, "opam": b.Image.Opam, "recipe": out.Inputs.Recipe, "snapshot": out.Snapshot},
		Dependencies: map[string]string{
			"git+opam-repository":              "gitCommit:" + out.Inputs.OpamCommit,
			"kiln-rootfs:" + out.Inputs.Rootfs: out.Inputs.RootfsID,
			"kiln-builder-spec":                out.Inputs.Spec,
		},
	}
	if len(out.Inputs.Packages) > 0 {
		p.Parameters["packages"] = strings.Join(out.Inputs.Packages, " ")
	}
	data, err := p.InToto()
	return data, err
}
