package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/projector"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// BenchmarkProjectBurst (issue #11: ".used events trail a burst of clicks
// by 1.6–2.1 s"): b.N redemptions of b.N links are on SCOPES when one
// projector starts; it reports the used events projected per second until
// the consumer has nothing pending.
func BenchmarkProjectBurst(b *testing.B) {
	srv := bustest.Start(b)
	_, js := srv.Connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	used := t0.Add(time.Minute)
	for i := range b.N {
		data, _ := json.Marshal(scope.State{Change: scope.ChangeUsed, LinkID: fmt.Sprintf("L%d", i), Purpose: events.PurposeSignin, At: t0, UsedAt: &used})
		if _, err := js.PublishAsync(scope.Signin("acme", fmt.Sprintf("c-%d", i)), data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	p, err := projector.New(projector.Config{JS: js})
	if err != nil {
		b.Fatal(err)
	}
	c, err := js.Consumer(ctx, bus.StreamScopes, bus.ConsumerProjector)
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- p.Run(runCtx) }()
	eventually.True(b, 4*time.Minute, func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the projector to catch up")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.StopTimer()
	stop()
	if err := <-done; err != nil {
		b.Error(err)
	}
}
