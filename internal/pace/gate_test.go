package pace

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/clock"
)

// sendTaking passes one send through g that takes d on clk.
func sendTaking(t *testing.T, g *Gate, clk *clock.Fake, d time.Duration) {
	t.Helper()
	done, err := g.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(d)
	done()
}

func TestGateLimitFollowsPaceTimesLatency(t *testing.T) {
	clk := clock.NewFake(t0)
	g := NewGate(clk, func() float64 { return 20 }, 16)
	if got := g.Limit(); got != 1 {
		t.Fatalf("limit before any answer = %d, want 1", got)
	}
	for range 20 {
		sendTaking(t, g, clk, 50*time.Millisecond)
	}
	if got := g.Limit(); got != 2 { // ceil(20/s × 50 ms) + 1
		t.Fatalf("limit at 20/s, 50 ms = %d, want 2", got)
	}
	prev := g.Limit()
	for range 40 {
		sendTaking(t, g, clk, 400*time.Millisecond)
		if got := g.Limit(); got < prev {
			t.Fatalf("limit fell from %d to %d while latency rose", prev, got)
		}
		prev = g.Limit()
	}
	if got := g.Limit(); got != 9 { // ceil(20 × 0.4) + 1
		t.Fatalf("limit at 20/s, 400 ms = %d, want 9", got)
	}
	for range 40 {
		sendTaking(t, g, clk, 5*time.Second)
	}
	if got := g.Limit(); got != 16 {
		t.Fatalf("limit at 20/s, 5 s = %d, want the cap 16", got)
	}
}

func TestGateUnpacedIsTheCap(t *testing.T) {
	g := NewGate(clock.NewFake(t0), func() float64 { return math.Inf(1) }, 7)
	if got := g.Limit(); got != 7 {
		t.Fatalf("unpaced limit = %d, want 7", got)
	}
}

func TestGateHoldsSendsBeyondTheLimit(t *testing.T) {
	clk := clock.NewFake(t0)
	g := NewGate(clk, func() float64 { return 20 }, 16)
	sendTaking(t, g, clk, 50*time.Millisecond) // limit 2
	d1, err := g.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d2, err := g.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("third send with 2 on the wire: err = %v, want it held until ctx ends", err)
	}
	got := make(chan error, 1)
	go func() {
		d3, err := g.Acquire(context.Background())
		if err == nil {
			d3()
		}
		got <- err
	}()
	clk.Advance(50 * time.Millisecond)
	d1()
	if err := <-got; err != nil {
		t.Fatalf("send after one ended: %v", err)
	}
	d2()
	d2() // a second done is a no-op
	if got := g.Limit(); got != 2 {
		t.Fatalf("limit = %d, want 2", got)
	}
}
