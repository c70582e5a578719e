package web

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current"
)

// BenchmarkLogFollowers200 measures one log line reaching 200 browsers following a
// running job's log by server-sent events (rendered HTML lines): ns/op is the time from
// the job writing a line to the last of the 200 followers reading it.
func BenchmarkLogFollowers200(b *testing.B) {
	const followers = 200
	c := newConsole(b, "slow-bench")
	id := c.jobOf("slow-bench", current.JobRunning)
	var start LogChunk
	c.waitFor("the first lines", func() bool {
		ch, err := CurrentEngine{c.eng}.ReadLog(b.Context(), id, 0, 1<<20)
		start = ch
		return err == nil && strings.Count(string(ch.Data), "\n") >= 3
	})
	line := strings.Count(string(start.Data), "\n") + 1
	url := fmt.Sprintf("%s/job/%s/log/events?offset=%d&line=%d", c.srv.URL, id, start.Next, line)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: followers}}
	got := make([]chan int, followers)
	for i := range got {
		got[i] = make(chan int, 16)
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
		c.lines <- fmt.Sprintf("\x1b[32mline\x1b[0m %d of the benchmark, with some text to make it a typical log line", i)
		for _, ch := range got {
			if _, ok := <-ch; !ok {
				b.Fatal("a follower's stream ended")
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(followers), "followers")
	close(c.lines)
}
