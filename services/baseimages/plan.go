package baseimages

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Image is one arch-independent image of the matrix: the opam image of a
// distribution (OCaml empty) or a compiler image on top of it.
type Image struct {
	Distro Distro `json:"distro"`
	// OCaml is the compiler's full version; empty for the opam image.
	OCaml string `json:"ocaml,omitempty"`
	// Opam is the version of opam in the image.
	Opam string `json:"opam"`
	// Packages are the Debian packages a compiler image has besides the compiler
	// (configured; empty for the opam image).
	Packages []string `json:"packages,omitempty"`
	// Config is the distribution's configuration (mirror, snapshot date).
	Config DistroConfig `json:"-"`
	// Deprecated says why a retired image is no longer built ("" when it is).
	Deprecated string `json:"deprecated,omitempty"`
}

// Name is the image's own tag: debian-12-ocaml-4.13 or debian-12-opam.
func (im Image) Name() string {
	if im.OCaml == "" {
		return im.Distro.Name + "-opam"
	}
	return im.Distro.Name + "-ocaml-" + majorMinor(im.OCaml)
}

// Build is an image on one architecture.
type Build struct {
	Image Image `json:"image"`
	Arch  Arch  `json:"arch"`
}

// Name is the image's name with its architecture, as staging tags have it.
func (b Build) Name() string { return b.Image.Name() + "-" + b.Arch.Name }

// Tag is a public tag: a multi-arch index of one image's builds.
type Tag struct {
	Name string `json:"name"`
	// Image is the name of the image the tag points at.
	Image string `json:"image"`
	// Alias is true for tags other than the image's own name.
	Alias bool `json:"alias,omitempty"`
	// Deprecated says why the tag's image is retired ("" when it is not).
	Deprecated string `json:"deprecated,omitempty"`
}

// Plan is what a configuration builds and publishes.
type Plan struct {
	Images []Image `json:"images"`
	Builds []Build `json:"builds"`
	Tags   []Tag   `json:"tags"`
	// Pools are the fleet pools the builds need.
	Pools []string `json:"pools"`
}

// Plan expands the configuration into images, per-architecture builds and tags.
func (c *Config) Plan() Plan {
	var p Plan
	var arches []Arch
	for _, n := range c.Arches {
		if a, ok := LookupArch(n); ok {
			arches = append(arches, a)
			p.Pools = append(p.Pools, a.Pool)
		}
	}
	images := map[string]Image{}
	for _, dc := range c.Distros {
		d, ok := LookupDistro(dc.Name)
		if !ok {
			continue
		}
		if !c.wants(c.Opam, d.Opam) {
			continue
		}
		retired := ""
		if dc.Retired {
			retired = d.Name + " is retired"
		}
		opamImg := Image{Distro: d, Opam: d.Opam, Config: dc, Deprecated: retired}
		p.Images = append(p.Images, opamImg)
		if c.wants(c.OCaml, d.OCaml) || slices.Contains(c.Retired, majorMinor(d.OCaml)) {
			img := opamImg
			img.OCaml = d.OCaml
			img.Packages = c.compilerPackages(dc)
			if img.Deprecated == "" && slices.Contains(c.Retired, majorMinor(d.OCaml)) {
				img.Deprecated = "OCaml " + majorMinor(d.OCaml) + " is retired"
			}
			p.Images = append(p.Images, img)
		}
	}
	for _, im := range p.Images {
		images[im.Name()] = im
		if im.Deprecated != "" {
			continue
		}
		for _, a := range arches {
			p.Builds = append(p.Builds, Build{Image: im, Arch: a})
		}
	}
	p.Tags = tags(p.Images, c.Latest)
	return p
}

// wants says whether a list of versions ("X.Y" or "distro") includes a distribution's
// version v.
func (c *Config) wants(list []string, v string) bool {
	return slices.Contains(list, "distro") || slices.Contains(list, majorMinor(v))
}

// tags are the reference's tags: each image's own, <distro>-<ver> for the
// distribution's newest compiler, and, from the newest active version of each family,
// <family>-ocaml-<X.Y>, <family> and (for the latest family) latest.
func tags(images []Image, latest string) []Tag {
	var out []Tag
	add := func(name string, im Image, alias bool) {
		out = append(out, Tag{Name: name, Image: im.Name(), Alias: alias, Deprecated: im.Deprecated})
	}
	newest := map[string]Image{}  // by distribution: its newest compiler image
	family := map[string]Distro{} // by family: its newest active version
	for _, im := range images {
		add(im.Name(), im, false)
		if im.OCaml == "" {
			continue
		}
		if cur, ok := newest[im.Distro.Name]; !ok || versionLess(cur.OCaml, im.OCaml) {
			newest[im.Distro.Name] = im
		}
		if im.Deprecated == "" {
			if cur, ok := family[im.Distro.Family]; !ok || versionLess(cur.Version, im.Distro.Version) {
				family[im.Distro.Family] = im.Distro
			}
		}
	}
	for _, im := range images {
		if n, ok := newest[im.Distro.Name]; ok && n.Name() == im.Name() {
			add(im.Distro.Name, im, true)
		}
	}
	for _, im := range images {
		d, ok := family[im.Distro.Family]
		if !ok || d.Name != im.Distro.Name || im.OCaml == "" || im.Deprecated != "" {
			continue
		}
		add(d.Family+"-ocaml-"+majorMinor(im.OCaml), im, true)
		if newest[d.Name].Name() == im.Name() {
			add(d.Family, im, true)
			if d.Family == latest {
				add("latest", im, true)
			}
		}
	}
	return out
}

// versionLess compares dotted numeric versions.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// String is the plan as `kiln images plan` prints it.
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "builds (%d):\n", len(p.Builds))
	for _, bd := range p.Builds {
		extra := ""
		if len(bd.Image.Packages) > 0 {
			extra = "  with " + strings.Join(bd.Image.Packages, " ")
		}
		fmt.Fprintf(&b, "  %-28s %-8s pool %s%s\n", bd.Image.Name(), bd.Arch.Name, bd.Arch.Pool, extra)
	}
	fmt.Fprintf(&b, "tags (%d):\n", len(p.Tags))
	for _, t := range p.Tags {
		note := ""
		if t.Deprecated != "" {
			note = "  (deprecated: " + t.Deprecated + ")"
		}
		fmt.Fprintf(&b, "  %-28s -> %s%s\n", t.Name, t.Image, note)
	}
	return b.String()
}
