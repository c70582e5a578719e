package builder_test

import (
	"runtime"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/sandbox"
)

func TestStepLimits(t *testing.T) {
	root := t.TempDir()
	def := builder.DefaultLimits(root)
	if def.Memory <= 0 || def.Memory > 8<<30 || def.Pids != 4096 || def.CPUs != float64(runtime.NumCPU()) || def.Disk <= 0 || def.Disk > 16<<30 {
		t.Fatalf("DefaultLimits = %+v, want at most 8 GiB, 4096 processes, %d CPUs, at most 16 GiB of disk", def, runtime.NumCPU())
	}
	tests := []struct {
		name      string
		set, want sandbox.Limits
	}{
		{name: "none given: the defaults", set: sandbox.Limits{}, want: def},
		{name: "given: kept", set: sandbox.Limits{Memory: 1 << 30, CPUs: 0.5, Pids: 100, Disk: 1 << 20},
			want: sandbox.Limits{Memory: 1 << 30, CPUs: 0.5, Pids: 100, Disk: 1 << 20}},
		{name: "negative: unlimited", set: sandbox.Limits{Memory: -1, CPUs: -1, Pids: -1, Disk: -1}, want: sandbox.Limits{}},
		{name: "some given", set: sandbox.Limits{Pids: 10},
			want: sandbox.Limits{Memory: def.Memory, CPUs: def.CPUs, Pids: 10, Disk: def.Disk}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := builder.New(builder.Options{Root: root, Limits: tt.set})
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Limits(); got != tt.want {
				t.Errorf("Limits() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
