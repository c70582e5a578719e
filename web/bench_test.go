package web

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current"
)

// BenchmarkLogFollowers200 measures log lines reaching 200 browsers following a
// running job's log by server-sent events (rendered HTML lines): ns/op is the time from
// the job writing one line (or a burst of 100) to the last of the 200 followers reading
// it (them all).
func BenchmarkLogFollowers200(b *testing.B) {
	b.Run("one-line", func(b *testing.B) { benchFollowers(b, 1) })
	b.Run("burst-100", func(b *testing.B) { benchFollowers(b, 100) })
}

func benchFollowers(b *testing.B, burst int) {
	const followers = 200
	c := newConsole(b, "slow-bench")
	id := c.jobOf("slow-bench", current.JobRunning)
	url, _ := c.followURL(id)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: followers}}
	got := make([]chan int, followers)
	for i := range got {
		got[i] = make(chan int, 256)
		resp, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		go func(ch chan int) {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "event: line") {
					ch <- 1
				}
			}
			close(ch)
		}(got[i])
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range burst {
			c.lines <- fmt.Sprintf("\x1b[32mline\x1b[0m %d.%d of the benchmark, with some text to make it a typical log line", i, j)
		}
		for _, ch := range got {
			for range burst {
				if _, ok := <-ch; !ok {
					b.Fatal("a follower's stream ended")
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(followers), "followers")
	b.ReportMetric(float64(b.N*burst*followers)/b.Elapsed().Seconds(), "lines-delivered/s")
	close(c.lines)
}
