package issuer_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/issuer"
)

// BenchmarkIssuerThroughput pre-publishes b.N sign-in actions (distinct
// clients) to ACTIONS on an in-process server and measures how fast one
// Issuer consumes them all. Every action is a ledger lookup, a scope read,
// a conditional scope write, an issued event, a mail command, a ledger
// write (group commit) and an ack. "default" is Concurrency 0 (256).
func BenchmarkIssuerThroughput(b *testing.B) {
	for _, conc := range []int{0, 256} {
		name := "concurrency=" + strconv.Itoa(conc)
		if conc == 0 {
			name = "concurrency=default"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b)
			iss, _ := e.newIssuerConcurrency(e.db, conc)
			measureThroughput(b, e, iss, func(i int) events.Action {
				return signin("evt-bench-"+strconv.Itoa(i), "client-"+strconv.Itoa(i))
			})
		})
	}
}

// measureThroughput pre-publishes b.N actions asynchronously, then runs iss
// until it has acked them all, checks that each queued one mail command,
// and reports actions/s.
func measureThroughput(b *testing.B, e *env, iss *issuer.Issuer, action func(i int) events.Action) {
	ctx := e.ctx
	for i := 0; i < b.N; i++ {
		a := action(i)
		msg := nats.NewMsg(a.Subject())
		msg.Data = e.marshal(a)
		msg.Header.Set(jetstream.MsgIDHeader, events.EnvelopeOf(a).EventID)
		if _, err := e.js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("pre-publish did not complete")
	}
	cons, err := e.js.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- iss.Run(runCtx) }()
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.AckFloor.Stream >= uint64(b.N) && info.NumAckPending == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if n := e.mailCount(); n != b.N {
		b.Fatalf("%d mail commands for %d actions", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "actions/s")
}
