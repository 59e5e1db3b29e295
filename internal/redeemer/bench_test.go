package redeemer_test

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRedeem redeems distinct, freshly issued sign-in links through
// the real handler over HTTP (one redeemer, one in-process NATS server, the
// projector running), many clients in parallel. Each operation is one POST:
// a scope read, the conditional publish and a ticket signature. It reports
// redemptions/s, the p50/p99 latency of one POST, and the CPU cores the
// whole process (NATS server included) used while measuring. With few
// clients the latency is the cost of one click; with many, the throughput.
func BenchmarkRedeem(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", par*runtime.GOMAXPROCS(0)), func(b *testing.B) { benchRedeem(b, par) })
	}
}

func benchRedeem(b *testing.B, parallelism int) {
	e := newEnv(b)
	s := e.start()

	tokens := make([]string, b.N)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				tokens[i], _ = e.issue(spec{EventID: fmt.Sprintf("bench-%d-%d", b.N, i), Client: fmt.Sprintf("c-%d", i)})
			}
		}()
	}
	wg.Wait()
	e.projectorIdle() // the issued states are projected (to nothing) before the clock starts

	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var (
		mu      sync.Mutex
		lat     = make([]time.Duration, 0, b.N)
		failed  atomic.Int64
		counter atomic.Int64
	)
	b.SetParallelism(parallelism)
	b.ResetTimer()
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mine := make([]time.Duration, 0, 256)
		for pb.Next() {
			tok := tokens[counter.Add(1)-1]
			t := time.Now()
			resp, err := client.Post(s.URL+"/l/"+tok, "", nil)
			if err != nil {
				failed.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mine = append(mine, time.Since(t))
			if resp.StatusCode != http.StatusSeeOther {
				failed.Add(1)
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d redemptions failed", n, b.N)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "redemptions/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
}
