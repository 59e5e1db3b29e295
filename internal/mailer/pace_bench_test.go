package mailer_test

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPacedBacklog measures the pacing: a backlog of mail commands
// sent by 1 or 3 paced mailer replicas (each on its own NATS connection to
// one in-process nats-server, reading MaxSendRate from the stand-in's
// GetAccount) through sestest.Limited, an SES stand-in that allows R
// sends/s (token bucket holding R/4, at least 2) and answers TooManyRequestsException
// beyond, 50 ms per call. Run it with -benchtime=1x; it reports
//
//	rate/R       emails accepted per second, first to last, over R
//	throttled    throttled answers over all SendEmail calls
//	drain/ideal  time from starting the replicas to the last email
//	             accepted, over the ideal backlog/R
//
// The R=20 backlog is 300 emails (15 s ideal), R=200 1,000 (5 s); the
// last two cases are the full 1,000 at R=20 (50 s each; select them with
// -bench 'BenchmarkPacedBacklog/R=20$/.*/emails=1000'). The
// unpaced runs are the mailer before package pace (8 in flight per
// replica, no pacer), for comparison; their retries wait 200 ms doubling
// to 2 s (production: 1 s to 5 min).
func BenchmarkPacedBacklog(b *testing.B) {
	for _, c := range []struct {
		rate             float64
		replicas, emails int
		paced            bool
	}{
		{20, 1, 300, true}, {20, 3, 300, true}, {200, 1, 1000, true}, {200, 3, 1000, true},
		{20, 1, 300, false}, {200, 3, 1000, false},
		{20, 1, 1000, true}, {20, 3, 1000, true}, // 50 s each
	} {
		name := fmt.Sprintf("R=%g/replicas=%d/emails=%d", c.rate, c.replicas, c.emails)
		if !c.paced {
			name = "unpaced/" + name
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				r := runBacklog(b, c.rate, c.replicas, c.emails, 50*time.Millisecond, c.paced)
				steady := float64(r.counts.Accepted-1) / r.counts.Last.Sub(r.counts.First).Seconds()
				ideal := time.Duration(float64(c.emails) / c.rate * float64(time.Second))
				b.ReportMetric(steady/c.rate, "rate/R")
				b.ReportMetric(r.throttledFraction(), "throttled")
				b.ReportMetric(r.elapsed.Seconds()/ideal.Seconds(), "drain/ideal")
				b.ReportMetric(r.elapsed.Seconds(), "drain_s")
				b.ReportMetric(float64(r.counts.Calls), "calls")
			}
		})
	}
}
