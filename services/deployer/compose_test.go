package deployer

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestComposeOverride(t *testing.T) {
	const image = "registry:5000/web@sha256:0123"
	for _, tc := range []struct {
		name, project, wantVersion, wantErr string
	}{
		{name: "version 3.7", project: "version: \"3.7\"\nservices:\n  web: {image: old}\n", wantVersion: "3.7"},
		{name: "version 2 unquoted", project: "version: '2'\nservices: {}\n", wantVersion: "2"},
		{name: "no version (compose specification)", project: "services:\n  web: {image: old}\n"},
		{name: "not YAML", project: "services: [\n", wantErr: "read the compose file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := composeOverride(tc.project, "web", image)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("override %q, want an error", b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkOverride(t, b, tc.wantVersion, image)
		})
	}
}

func checkOverride(t *testing.T, b []byte, version, image string) {
	t.Helper()
	var o struct {
		Version  string                       `yaml:"version"`
		Services map[string]map[string]string `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatalf("override %q does not parse: %v", b, err)
	}
	if o.Version != version || o.Services["web"]["image"] != image || len(o.Services) != 1 {
		t.Errorf("override %q: want version %q and web's image %s only", b, version, image)
	}
}

// FuzzComposeOverride: whatever a project's file holds, the override is either an
// error or a file with the project's version and the image.
func FuzzComposeOverride(f *testing.F) {
	f.Add("version: \"3.7\"\nservices: {}\n", "registry:5000/web@sha256:0123")
	f.Add("version: 2\n", "a:b")
	f.Add("{}", "x")
	f.Fuzz(func(t *testing.T, project, image string) {
		b, err := composeOverride(project, "web", image)
		if err != nil {
			return
		}
		var p struct {
			Version string `yaml:"version"`
		}
		yaml.Unmarshal([]byte(project), &p)
		checkOverride(t, b, p.Version, image)
	})
}
