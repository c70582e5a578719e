package healthcheck

import (
	"encoding/xml"
	"slices"
	"strings"
	"testing"
)

func TestFeeds(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	for _, tc := range []struct {
		name, path string
		code       int
		titles     []string
	}{
		{name: "everything", path: "/feed.atom", code: 200, titles: []string{
			"a.2.0 is now partial on 5.3 (dependency)", "c.1.0 is now bad on 4.14 (build)"}},
		{name: "maintainers regexp", path: "/feed.atom?maintainers=^CAROL", code: 200, titles: []string{"c.1.0 is now bad on 4.14 (build)"}},
		{name: "one maintainer", path: "/maintainer/alice@example.org/feed.atom", code: 200, titles: []string{"a.2.0 is now partial on 5.3 (dependency)"}},
		{name: "a maintainer with nothing broken", path: "/maintainer/bob/feed.atom", code: 200},
		{name: "bad regexp", path: "/feed.atom?maintainers=[", code: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.get(t, fixturePrefix+tc.path)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			if tc.code != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/atom+xml") {
				t.Errorf("content type %q", ct)
			}
			var feed atomFeed
			if err := xml.Unmarshal([]byte(body), &feed); err != nil {
				t.Fatalf("not an Atom feed: %v\n%s", err, body)
			}
			var titles []string
			for _, e := range feed.Entries {
				titles = append(titles, e.Title)
				if !strings.HasPrefix(e.Link.Href, f.srv.URL+fixturePrefix+"/log/2/") || e.ID == "" || e.Updated == "" {
					t.Errorf("entry %+v: want an absolute link to run 2's log, an id and a date", e)
				}
			}
			if !slices.Equal(titles, tc.titles) {
				t.Errorf("entries %q, want %q", titles, tc.titles)
			}
		})
	}
}
