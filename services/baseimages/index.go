package baseimages

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Index is every tag published: where it points, per architecture, what from, and
// when it last changed. It is kept as JSON in the service's folder.
type Index struct {
	Repository string               `json:"repository"`
	Tags       map[string]*TagEntry `json:"tags"`
	// Updated is when the index last changed.
	Updated time.Time `json:"updated"`
}

// TagEntry is one published tag.
type TagEntry struct {
	Name   string `json:"name"`
	Image  string `json:"image"`
	Alias  bool   `json:"alias,omitempty"`
	Digest string `json:"digest"`
	// Arches are the images of the index, by Debian architecture name.
	Arches map[string]ArchEntry `json:"arches"`
	// Changed is when the tag last moved, and Why which inputs moved then.
	Changed    time.Time `json:"changed"`
	Why        []string  `json:"why,omitempty"`
	Deprecated string    `json:"deprecated,omitempty"`
}

// ArchEntry is the image of a tag on one architecture.
type ArchEntry struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Inputs Inputs `json:"inputs"`
}

// Update records a publication.
func (ix *Index) Update(plan Plan, builds map[string]Built, rep Report) {
	if ix.Tags == nil {
		ix.Tags = map[string]*TagEntry{}
	}
	t0 := now().UTC()
	for _, t := range plan.Tags {
		d, ok := rep.Digests[t.Name]
		if !ok {
			continue
		}
		e := ix.Tags[t.Name]
		if e == nil {
			e = &TagEntry{Name: t.Name}
			ix.Tags[t.Name] = e
		}
		e.Image, e.Alias, e.Deprecated = t.Image, t.Alias, t.Deprecated
		if e.Digest != d {
			e.Changed, e.Digest = t0, d
			e.Why = rep.Tags[t.Name]
			ix.Updated = t0
		}
		if t.Deprecated != "" {
			continue
		}
		e.Arches = map[string]ArchEntry{}
		for _, b := range plan.Builds {
			if b.Image.Name() != t.Image {
				continue
			}
			bt := builds[b.Name()]
			e.Arches[bt.Arch] = ArchEntry{Digest: bt.Digest, Size: bt.Size, Inputs: bt.Inputs}
		}
	}
}

// Sorted are the tags by name.
func (ix *Index) Sorted() []*TagEntry {
	out := make([]*TagEntry, 0, len(ix.Tags))
	for _, e := range ix.Tags {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// IndexFile keeps an Index in a file.
type IndexFile struct {
	Path string
	mu   sync.Mutex
}

// Load reads the index (empty when the file does not exist yet).
func (f *IndexFile) Load() (*Index, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ix := &Index{Tags: map[string]*TagEntry{}}
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return ix, nil
	}
	if err != nil {
		return nil, fmt.Errorf("base-images index: %w", err)
	}
	if err := json.Unmarshal(data, ix); err != nil {
		return nil, fmt.Errorf("base-images index %s: %w", f.Path, err)
	}
	return ix, nil
}

// Save writes the index atomically.
func (f *IndexFile) Save(ix *Index) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := json.MarshalIndent(ix, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return err
	}
	tmp := f.Path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("base-images index: %w", err)
	}
	return os.Rename(tmp, f.Path)
}

var indexPage = template.Must(template.New("index").Funcs(template.FuncMap{
	"mb":    func(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/(1<<20)) },
	"short": func(s string) string { return short(trimAlgo(s)) },
	"date":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Base images</title>
<style>body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
tr.deprecated{color:#888}tr.deprecated td.tag{text-decoration:line-through}.badge{background:#c60;color:#fff;border-radius:3px;padding:0 .3em;font-size:.85em}code{font-size:.9em}</style></head>
<body><h1>Base images</h1>
<p>Repository <code id="repository">{{.Repository}}</code>, {{len .Tags}} tags. <a href="/base-images/index.json">JSON</a></p>
<table id="tags"><thead><tr><th>tag</th><th>image</th><th>digest per architecture</th><th>inputs</th><th>size</th><th>last changed</th><th>status</th></tr></thead><tbody>
{{range .Sorted}}<tr class="tag{{if .Deprecated}} deprecated{{end}}" id="tag-{{.Name}}" data-digest="{{.Digest}}">
<td class="tag"><code>{{.Name}}</code></td><td>{{.Image}}{{if .Alias}} (alias){{end}}</td>
<td>{{range $a, $e := .Arches}}<div class="arch" data-arch="{{$a}}">{{$a}}: <code>{{short $e.Digest}}</code></div>{{end}}</td>
<td>{{range $a, $e := .Arches}}<div>{{$a}}: opam-repository <code>{{short $e.Inputs.OpamCommit}}</code>, {{$e.Inputs.Rootfs}}</div>{{end}}</td>
<td>{{range $a, $e := .Arches}}<div class="size">{{$a}}: {{mb $e.Size}}</div>{{end}}</td>
<td>{{date .Changed}}{{if .Why}}<br><small>{{range .Why}}{{.}}; {{end}}</small>{{end}}</td>
<td>{{if .Deprecated}}<span class="badge">deprecated</span> {{.Deprecated}}{{else}}current{{end}}</td></tr>
{{end}}</tbody></table></body></html>
`))

func trimAlgo(s string) string {
	if len(s) > 7 && s[:7] == "sha256:" {
		return s[7:]
	}
	return s
}

// Handlers are the index's pages: /base-images (HTML) and /base-images/index.json.
func (f *IndexFile) Handlers() map[string]http.Handler {
	load := func(w http.ResponseWriter) *Index {
		ix, err := f.Load()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return nil
		}
		return ix
	}
	return map[string]http.Handler{
		"GET /base-images": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ix := load(w); ix != nil {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				if err := indexPage.Execute(w, ix); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
				}
			}
		}),
		"GET /base-images/index.json": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ix := load(w); ix != nil {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(ix)
			}
		}),
	}
}
