package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// ReadDockerArchive checks the layout of a Docker image archive (`docker save`):
// manifest.json naming a config whose file name is its digest and layers whose
// digests are the config's diff_ids. It returns the tags and the files of the layers.
func readDockerArchive(t *testing.T, data []byte) (tags []string, cfg map[string]any, files map[string]string) {
	t.Helper()
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			members[h.Name], _ = io.ReadAll(tr)
		}
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v: %s", err, members["manifest.json"])
	}
	m := manifest[0]
	raw, ok := members[m.Config]
	if sum := sha256.Sum256(raw); !ok || hex.EncodeToString(sum[:])+".json" != m.Config {
		t.Fatalf("config %s missing or not named by its digest", m.Config)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	diffIDs := cfg["rootfs"].(map[string]any)["diff_ids"].([]any)
	if len(diffIDs) != len(m.Layers) {
		t.Fatalf("%d diff_ids for %d layers", len(diffIDs), len(m.Layers))
	}
	files = map[string]string{}
	for i, l := range m.Layers {
		sum := sha256.Sum256(members[l])
		if "sha256:"+hex.EncodeToString(sum[:]) != diffIDs[i] {
			t.Errorf("layer %s: digest is not diff_id %v", l, diffIDs[i])
		}
		lr := tar.NewReader(bytes.NewReader(members[l]))
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %s: %v", l, err)
			}
			body, _ := io.ReadAll(lr)
			files[strings.TrimPrefix(h.Name, "./")] = string(body)
		}
	}
	return m.RepoTags, cfg, files
}

func TestExportDocker(t *testing.T) {
	testenv.RequireCommand(t, "tar")
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Import(ctx, "kiln/tiny:1", tarOf(t, entry{name: "etc/os-release", body: "ID=tiny\n"}), Config{Env: []string{"A=1"}, Workdir: "/w"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, ref string
		tags      []string
	}{
		{"local name", "kiln/tiny:1", []string{"kiln/tiny:1"}},
		{"local name without its tag", "kiln/tiny", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := st.ExportDocker(ctx, c.ref, &out)
			if c.tags == nil {
				if err == nil {
					t.Fatal("exported a base that does not exist")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tags, cfg, files := readDockerArchive(t, out.Bytes())
			if strings.Join(tags, ",") != strings.Join(c.tags, ",") {
				t.Errorf("tags %v, want %v", tags, c.tags)
			}
			if files["etc/os-release"] != "ID=tiny\n" {
				t.Errorf("layer files: %v", files)
			}
			conf := cfg["config"].(map[string]any)
			if conf["WorkingDir"] != "/w" || conf["Env"].([]any)[0] != "A=1" || cfg["os"] != "linux" {
				t.Errorf("config %v", cfg)
			}
		})
	}
}
