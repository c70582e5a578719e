package healthcheck

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"
)

// feedEntry is a package that broke on a switch from one finished run to the next.
type feedEntry struct {
	Change PackageChange
	Run    Run // the run it broke in
	Prev   Run // the run before, where it built
}

// feedCache keeps the entries of the feeds until a newer run finishes.
type feedCache struct {
	mu      sync.Mutex
	latest  int64
	entries []feedEntry
}

// brokenEntries are what broke in each of the last FeedRuns finished baseline runs
// against the run before, the newest first.
func (u *UI) brokenEntries(ctx context.Context) ([]feedEntry, error) {
	runs, err := u.store.Runs(ctx, Baseline, 0)
	if err != nil {
		return nil, err
	}
	runs = slices.DeleteFunc(runs, func(r Run) bool { return r.Status != RunDone })
	if len(runs) < 2 {
		return nil, nil
	}
	runs = runs[:min(len(runs), u.opts.FeedRuns+1)]
	u.feeds.mu.Lock()
	defer u.feeds.mu.Unlock()
	if u.feeds.latest == runs[0].ID {
		return u.feeds.entries, nil
	}
	var entries []feedEntry
	for i := 0; i+1 < len(runs); i++ {
		dv, err := u.diff(ctx, runs[i+1].ID, runs[i].ID)
		if err != nil {
			return nil, err
		}
		for _, c := range dv.Diff.Of(NowBroken) {
			entries = append(entries, feedEntry{Change: c, Run: dv.New, Prev: dv.Old})
		}
	}
	u.feeds.latest, u.feeds.entries = runs[0].ID, entries
	return entries, nil
}

type atomLink struct {
	Href string `xml:"href,attr"`
	Rel  string `xml:"rel,attr,omitempty"`
}

type atomEntry struct {
	Title   string   `xml:"title"`
	ID      string   `xml:"id"`
	Updated string   `xml:"updated"`
	Link    atomLink `xml:"link"`
	Summary string   `xml:"summary"`
}

type atomFeed struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	Title   string      `xml:"title"`
	ID      string      `xml:"id"`
	Updated string      `xml:"updated"`
	Links   []atomLink  `xml:"link"`
	Author  string      `xml:"author>name"`
	Entries []atomEntry `xml:"entry"`
}

// base is the scheme and host the request came to, for the feed's absolute links.
func base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// writeFeed serves the entries keep selects as an Atom feed.
func (u *UI) writeFeed(w http.ResponseWriter, r *http.Request, title string, keep func(feedEntry) bool) {
	entries, err := u.brokenEntries(r.Context())
	if err != nil {
		http.Error(w, err.Error(), u.errorCode(r, err))
		return
	}
	b := base(r)
	f := atomFeed{Title: title, ID: b + r.URL.RequestURI(), Author: "kiln health check",
		Links: []atomLink{{Href: b + r.URL.RequestURI(), Rel: "self"}, {Href: b + u.opts.Prefix + "/diff"}}}
	updated := time.Unix(0, 0)
	for _, e := range entries {
		if !keep(e) {
			continue
		}
		c := e.Change
		when := e.Run.Finished
		if when.After(updated) {
			updated = when
		}
		kind := ""
		if c.Kind != KindNone {
			kind = " (" + string(c.Kind) + ")"
		}
		f.Entries = append(f.Entries, atomEntry{
			Title:   fmt.Sprintf("%s is now %s on %s%s", c.Package, c.New, c.Switch, kind),
			ID:      fmt.Sprintf("%s%s/run/%d#%s/%s", b, u.opts.Prefix, e.Run.ID, url.PathEscape(c.Switch), url.PathEscape(c.Package)),
			Updated: when.UTC().Format(time.RFC3339),
			Link:    atomLink{Href: b + u.logURL(e.Run.ID, url.PathEscape(c.Switch), c.New, url.PathEscape(c.Package))},
			Summary: fmt.Sprintf("%s was %s on %s in run %d (commit %s) and is %s%s in run %d (commit %s). Maintainers: %v.",
				c.Package, c.Old, c.Switch, e.Prev.ID, shortCommit(e.Prev.Commit), c.New, kind, e.Run.ID, shortCommit(e.Run.Commit), c.Maintainers),
		})
	}
	f.Updated = updated.UTC().Format(time.RFC3339)
	w.Header().Set("Content-Type", "application/atom+xml; charset=utf-8")
	w.Write([]byte(xml.Header))
	enc := xml.NewEncoder(w)
	enc.Indent("", " ")
	if err := enc.Encode(f); err != nil {
		u.log.Warn("health-check feed", "path", r.URL.Path, "err", err)
	}
}

// feed is the Atom feed of what broke, of the packages whose maintainers match
// ?maintainers= (a regexp, case-insensitive) when given.
func (u *UI) feed(w http.ResponseWriter, r *http.Request) {
	title := "health check: packages that broke"
	keep := func(feedEntry) bool { return true }
	if m := r.URL.Query().Get("maintainers"); m != "" {
		re, err := regexp.Compile("(?i)" + m)
		if err != nil {
			http.Error(w, fmt.Sprintf("maintainers=%q: %v", m, err), http.StatusBadRequest)
			return
		}
		title += " (maintainers matching " + m + ")"
		keep = func(e feedEntry) bool { return slices.ContainsFunc(e.Change.Maintainers, re.MatchString) }
	}
	u.writeFeed(w, r, title, keep)
}

// maintainerFeed is the Atom feed of what broke of one maintainer's packages.
func (u *UI) maintainerFeed(w http.ResponseWriter, r *http.Request) {
	who := r.PathValue("who")
	u.writeFeed(w, r, "health check: packages of "+who+" that broke", func(e feedEntry) bool {
		return maintainedBy(e.Change.Maintainers, who)
	})
}
