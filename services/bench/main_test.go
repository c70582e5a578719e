package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/services/bench/detect"
)

// TestMain lets the test binary act as the processes of the isolation measurement:
// KILN_BENCH_HELPER=bench:N times a CPU-bound benchmark N times once a line arrives on
// its standard input; KILN_BENCH_HELPER=spin keeps every CPU busy, as a build does.
func TestMain(m *testing.M) {
	switch mode := os.Getenv("KILN_BENCH_HELPER"); {
	case mode == "spin":
		buf := make([]byte, 1<<20)
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					sha256.Sum256(buf)
				}
			}()
		}
		wg.Wait()
	case len(mode) > 6 && mode[:6] == "bench:":
		n, _ := strconv.Atoi(mode[6:])
		bufio.NewReader(os.Stdin).ReadString('\n')
		rec, err := detect.Record(context.Background(), detect.RecordOptions{Bursts: 1, BurstSize: n, Gap: 1, Work: 8})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(rec.Bursts[0])
		os.Exit(0)
	}
	os.Exit(m.Run())
}
