package forge

import "testing"

func TestWithMarker(t *testing.T) {
	m := CommentMarker("opam-repo-ci")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"adds the marker as the first line", "hello", m + "\nhello"},
		{"keeps a body that has it", "hello\n" + m, "hello\n" + m},
		{"empty body", "", m + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WithMarker(tc.body, m); got != tc.want {
				t.Errorf("WithMarker(%q) = %q, want %q", tc.body, got, tc.want)
			}
		})
	}
	if m != "<!-- kiln:opam-repo-ci -->" {
		t.Errorf("CommentMarker = %q: forges show only HTML comments hidden", m)
	}
}
