package mailer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// nopSender accepts everything at once, so the benchmark measures the
// mailer itself: done check, token, render, done marker, event, ack.
type nopSender struct{}

func (nopSender) Send(context.Context, *mail.Message) (string, error) { return "nop", nil }

// BenchmarkMailerThroughput queues b.N sign-in commands, then measures one
// mailer (concurrency 32) working through them, with a no-op sender and
// with the bbolt sink.
func BenchmarkMailerThroughput(b *testing.B) {
	for _, c := range []struct {
		name   string
		sender func(e *env) mailer.Sender
	}{
		{"nop", func(*env) mailer.Sender { return nopSender{} }},
		{"sink", func(e *env) mailer.Sender { return e.sink(b) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			e := newEnv(b)
			for i := range b.N {
				cmd, _ := e.signin(b, fmt.Sprintf("bench-%d", i), fmt.Sprintf("c%d@example.com", i))
				e.queue(b, cmd)
			}
			reg := prometheus.NewRegistry()
			b.StartTimer()
			start := time.Now()
			e.start(b, c.sender(e), reg, func(c *mailer.Config) { c.Concurrency = 32 })
			eventually.True(b, 30*time.Second, func() bool { return counter(b, reg, "linkpipe_mailer_sent_total") == float64(b.N) }, "every email")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
		})
	}
}
