package opam

import (
	"runtime"
	"strings"
	"testing"
)

// deepInputs are values and sections nested depth levels deep, one of each kind of
// nesting the parser counts.
func deepInputs(depth int) []struct{ name, src string } {
	return []struct{ name, src string }{
		{"lists", "x-deep: " + strings.Repeat("[", depth) + strings.Repeat("]", depth)},
		{"groups", "depends: [" + strings.Repeat("(", depth-1) + `"a"` + strings.Repeat(")", depth-1) + "]"},
		{"prefix operators", "x-not: " + strings.Repeat("!", depth) + "a"},
		{"options", "x-opt: a" + strings.Repeat(" {b", depth) + strings.Repeat("}", depth)},
		{"formula", "depends: [" + strings.Repeat(`("a" & `, depth-1) + `"b"` + strings.Repeat(")", depth-1) + "]"},
		{"sections", strings.Repeat("s {\n", depth) + strings.Repeat("}\n", depth)},
	}
}

// TestNestingBound reads every kind of nesting at MaxDepth, and refuses one level
// more with an error naming the file and line.
func TestNestingBound(t *testing.T) {
	for _, tc := range deepInputs(MaxDepth) {
		t.Run(tc.name+"/at bound", func(t *testing.T) {
			f, err := ParseString("deep.opam", tc.src)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ParseString("printed", f.String())
			if err != nil {
				t.Fatalf("printed file does not parse: %v", err)
			}
			if !EqualFiles(f, g) {
				t.Errorf("printing does not round-trip")
			}
			if _, err := f.Depends(); err != nil {
				t.Errorf("Depends: %v", err)
			}
		})
	}
	for _, tc := range deepInputs(MaxDepth + 1) {
		t.Run(tc.name+"/over bound", func(t *testing.T) {
			_, err := ParseString("deep.opam", tc.src)
			if err == nil {
				t.Fatal("parsed")
			}
			if !strings.HasPrefix(err.Error(), "deep.opam:") || !strings.Contains(err.Error(), "nested more than 10000 deep") {
				t.Errorf("error %q does not name the file and the bound", err)
			}
		})
	}
}

// TestNestingUsesNoStack checks that parsing and printing deep values take no Go stack
// in proportion to the depth: a goroutine's stack starts at a few KB and grows by
// copying, so recursion 10,000 deep would take megabytes.
func TestNestingUsesNoStack(t *testing.T) {
	for _, tc := range deepInputs(MaxDepth) {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error)
			go func() {
				f, err := ParseString("deep.opam", tc.src)
				if err == nil {
					_ = f.String()
					EqualFiles(f, f)
				}
				runtime.ReadMemStats(&after)
				done <- err
			}()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if grown := int64(after.StackInuse) - int64(before.StackInuse); grown > 256<<10 {
				t.Errorf("stack in use grew by %d KB while parsing and printing", grown>>10)
			}
		})
	}
}

// BenchmarkParseDeep parses values and sections nested MaxDepth deep.
func BenchmarkParseDeep(b *testing.B) {
	for _, tc := range deepInputs(MaxDepth) {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.src)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := ParseString("deep.opam", tc.src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
