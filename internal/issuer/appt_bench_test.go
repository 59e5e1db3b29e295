package issuer_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// BenchmarkAppointmentScheduled pre-publishes b.N telehealth scheduled
// actions (distinct appointments, default reminders) and measures how fast
// one Issuer (default concurrency) handles them. Each is an owner lookup
// (SCOPES subjects), a scope read and conditional write, an issued event, a
// mail command, a schedule listing, two schedule publishes, two scope
// re-reads, a ledger write and an ack.
func BenchmarkAppointmentScheduled(b *testing.B) {
	e := newEnv(b)
	e.clk.Set(tA)
	ctx := e.ctx
	for i := 0; i < b.N; i++ {
		n := strconv.Itoa(i)
		a := scheduled("evt-bench-"+n, "client-"+n, "appt-"+n, tA.Add(96*time.Hour), true, nil)
		msg := nats.NewMsg(a.Subject())
		msg.Data = e.marshal(a)
		msg.Header.Set(jetstream.MsgIDHeader, a.EventID)
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
	go func() { done <- e.iss.Run(runCtx) }()
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
