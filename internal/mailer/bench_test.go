package mailer_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
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

// BenchmarkSinkSend stores b.N emails in the bbolt sink from 8 and 64
// concurrent senders (the mailer's sends in flight): the sink's own cost
// per email, fsync included.
func BenchmarkSinkSend(b *testing.B) {
	for _, senders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			s, err := mailer.NewSink(storetest.MustOpen(b, "mailer"), nil)
			if err != nil {
				b.Fatal(err)
			}
			m := &mail.Message{From: "links@acme.example", To: "pat@example.com", Subject: "Sign in to Acme Health",
				Text: "Sign in: https://links.example/l/k1.abcdefghijklmnopqrstuvwxyz0123456789\n" + strings.Repeat("text ", 100),
				HTML: strings.Repeat("<p>html</p>", 300), Headers: map[string]string{mail.HeaderMailID: "L1-signin"}}
			b.SetParallelism(max(1, senders/runtime.GOMAXPROCS(0))) // RunParallel starts GOMAXPROCS × this
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Send(context.Background(), m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
		})
	}
}
