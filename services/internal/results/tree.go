package results

import (
	"net/url"
	"strings"

	"github.com/kiln-ci/kiln/forge"
)

// VariantNode is a node of a commit's variants as a tree: a part of the variants'
// names (split at commas), or a variant (a leaf).
type VariantNode struct {
	Label string `json:"label"`
	// State is the variant's state, or for an inner node the most telling of its
	// leaves' (failed before error before running before queued before the others).
	State    forge.State    `json:"state"`
	Variant  *VariantRecord `json:"variant,omitempty"`
	URL      string         `json:"url,omitempty"`
	Children []*VariantNode `json:"children,omitempty"`
	// Open says the node starts unfolded: the tree's first level (the summary of
	// errors above it links to each failure).
	Open bool `json:"-"`
}

// stateRank orders states by how much they tell about a subtree.
var stateRank = map[forge.State]int{forge.Failed: 6, forge.Error: 5, forge.Running: 4, forge.Queued: 3,
	forge.Cancelled: 2, forge.Passed: 1, forge.Skipped: 0}

// variantTree arranges variants (in their order) as a tree by their comma-joined
// names; a leaf links to base + the variant's name.
func variantTree(vs []VariantRecord, base string) []*VariantNode {
	root := &VariantNode{}
	for i := range vs {
		v := &vs[i]
		n := root
		for _, part := range strings.Split(v.Name, ",") {
			var c *VariantNode
			for _, x := range n.Children {
				if x.Label == part && x.Variant == nil {
					c = x
					break
				}
			}
			if c == nil {
				c = &VariantNode{Label: part}
				n.Children = append(n.Children, c)
			}
			n = c
		}
		n.Variant, n.URL = v, base+variantPath(v.Name)
	}
	for _, c := range root.Children {
		settle(c)
		c.Open = len(c.Children) > 0
	}
	return root.Children
}

// settle sets the states of n's subtree.
func settle(n *VariantNode) {
	if n.Variant != nil {
		n.State = n.Variant.State
	}
	for _, c := range n.Children {
		settle(c)
		if n.State == "" || stateRank[c.State] > stateRank[n.State] {
			n.State = c.State
		}
	}
}

// variantPath escapes a variant's name for a path, keeping its commas as they are
// (…/variant/pkg.1.0,compilers,4.14,build).
func variantPath(name string) string {
	return strings.ReplaceAll(url.PathEscape(name), "%2C", ",")
}
