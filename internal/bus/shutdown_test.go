package bus_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// With a shutdown timeout, a handler that does not finish in time has its
// context cancelled and its message handed back at once (not after a
// retry backoff or AckWait), while a handler that finishes in time is
// acked; Run returns soon after the timeout.
func TestLoopShutdownTimeoutHandsBackWhatIsStillInFlight(t *testing.T) {
	e := newLoopEnv(t, 5*time.Minute)
	var rec settlements
	started := make(chan string, 10)
	l, err := bus.NewLoop(bus.LoopConfig{
		JS: e.js, Stream: loopStream, Consumer: loopConsumer, DeadLetter: loopSource,
		Concurrency: 2, PullMax: 2,
		Backoff: bus.Backoff{Min: time.Hour, Max: time.Hour}, // a retry would not come back in this test
		Handler: func(ctx context.Context, msg jetstream.Msg) error {
			started <- string(msg.Data())
			if string(msg.Data()) == "slow" {
				<-ctx.Done() // never finishes on its own
				return ctx.Err()
			}
			select {
			case <-time.After(100 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		OnSettled: rec.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.publish("t.x", "slow")
	e.publish("t.x", "quick")
	ctx, cancel := context.WithCancel(bus.WithShutdownTimeout(context.Background(), time.Second))
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	<-started
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the shutdown timeout")
	}
	if got := rec.of(bus.Acked); len(got) != 1 || string(got[0].Msg.Data()) != "quick" {
		t.Errorf("acked %v, want the quick one", got)
	}
	if got := rec.of(bus.HandedBack); len(got) != 1 || string(got[0].Msg.Data()) != "slow" {
		t.Errorf("handed back %v, want the slow one", got)
	}
	// Handed back, not delayed: another loop gets it at once.
	var again atomic.Value
	e.run(bus.LoopConfig{Handler: func(_ context.Context, msg jetstream.Msg) error {
		again.Store(string(msg.Data()) + "@" + strconv.Itoa(int(mustDelivered(msg))))
		return nil
	}})
	waitUntil(t, "the slow message to be redelivered", func() bool { return again.Load() != nil })
	if got := again.Load(); got != "slow@2" {
		t.Errorf("redelivered %v, want slow@2", got)
	}
}

func mustDelivered(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil {
		return 0
	}
	return md.NumDelivered
}

func TestShutdownTimeoutOfAContext(t *testing.T) {
	if d := bus.ShutdownTimeout(context.Background()); d != 0 {
		t.Errorf("none: %v", d)
	}
	if d := bus.ShutdownTimeout(bus.WithShutdownTimeout(context.Background(), 3*time.Second)); d != 3*time.Second {
		t.Errorf("3s: %v", d)
	}
}
