package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRootHoldsGoMod(t *testing.T) {
	if _, err := os.Stat(filepath.Join(Root(), "go.mod")); err != nil {
		t.Fatalf("Root() = %s has no go.mod: %v", Root(), err)
	}
}

func TestCacheDirIsCreated(t *testing.T) {
	root := t.TempDir()
	t.Setenv("KILN_TEST_CACHE", root)
	d := CacheDir(t, "x/y")
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		t.Fatalf("CacheDir did not create %s: %v", d, err)
	}
	if want := filepath.Join(root, "x", "y"); d != want {
		t.Errorf("CacheDir = %s, want %s", d, want)
	}
}

func TestCacheRoot(t *testing.T) {
	tests := []struct {
		name, env string
		want      func() string
	}{
		{name: "from the environment", env: "/tmp/some-cache", want: func() string { return "/tmp/some-cache" }},
		{name: "default", env: "", want: func() string {
			if os.Geteuid() == 0 {
				return "/var/cache/kiln-test"
			}
			d, err := os.UserCacheDir()
			if err != nil {
				return filepath.Join(os.TempDir(), "kiln-test")
			}
			return filepath.Join(d, "kiln-test")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KILN_TEST_CACHE", tc.env)
			if got, want := CacheRoot(), tc.want(); got != want {
				t.Errorf("CacheRoot() = %s, want %s", got, want)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_test_things_total"}, []string{"result"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_test_level"})
	reg.MustRegister(c, g)
	c.WithLabelValues("hit").Add(3)
	c.WithLabelValues("miss").Inc()
	g.Set(2.5)
	got := Metrics(t, reg)
	cases := []struct {
		name, key string
		want      float64
	}{
		{"counter with a label", "kiln_test_things_total{result=hit}", 3},
		{"another label value", "kiln_test_things_total{result=miss}", 1},
		{"gauge without labels", "kiln_test_level{}", 2.5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v, ok := got[tc.key]; !ok || v != tc.want {
				t.Fatalf("%s = %v (present %v), want %v; all: %v", tc.key, v, ok, tc.want, got)
			}
		})
	}
}
