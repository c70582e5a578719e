package detect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
)

func TestBisect(t *testing.T) {
	commits := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("c%d", i)
		}
		return out
	}
	cases := []struct {
		name     string
		n, first int
		fail     string // a commit whose probe fails
		err      bool
	}{
		{"two commits", 2, 1, "", false},
		{"three, middle bad", 3, 1, "", false},
		{"ten, last bad", 10, 9, "", false},
		{"hundred, early", 100, 3, "", false},
		{"hundred, late", 100, 77, "", false},
		{"probe fails", 10, 5, "c4", true},
		{"one commit", 1, 0, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probes := 0
			b, err := Bisect(context.Background(), commits(c.n), func(_ context.Context, commit string) (bool, error) {
				probes++
				if commit == c.fail {
					return false, errors.New("worker lost")
				}
				var i int
				fmt.Sscanf(commit, "c%d", &i)
				return i >= c.first, nil
			})
			if (err != nil) != c.err {
				t.Fatalf("err %v, want error %v", err, c.err)
			}
			if c.err {
				return
			}
			if want := fmt.Sprintf("c%d", c.first); b.FirstBad != want || b.LastGood != fmt.Sprintf("c%d", c.first-1) {
				t.Errorf("first bad %s after %s, want %s", b.FirstBad, b.LastGood, want)
			}
			if limit := int(math.Ceil(math.Log2(float64(c.n - 1)))); probes > limit || len(b.Probed) != probes {
				t.Errorf("%d probes (%d recorded) for %d commits, at most %d", probes, len(b.Probed), c.n, limit)
			}
		})
	}
}
