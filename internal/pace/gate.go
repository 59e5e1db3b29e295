package pace

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/linkpipe/linkpipe/internal/clock"
)

// GateAlpha is the weight of the newest latency in a Gate's estimate.
const GateAlpha = 0.25

// Gate bounds a replica's sends on the wire to what its pace needs:
//
//	limit = ceil(pace × latency) + 1, at most Cap
//
// where latency is a moving average (EWMA, GateAlpha) of the time the
// sends inside the Gate took. A provider that stores an email as soon as
// its request arrives (SES, without an idempotency key) sends again every
// request that was on the wire when a replica died, so fewer on the wire
// means fewer duplicates after a crash, at no cost in rate (Little's law).
// Before the first answer one send goes at a time; while the pace is
// unknown (unpaced) the limit is Cap. It is safe for concurrent use.
type Gate struct {
	clock clock.Clock
	pace  func() float64
	cap   int

	mu       sync.Mutex
	inFlight int
	latency  time.Duration // 0: none measured yet
	free     chan struct{} // closed (and replaced) when a send ends
}

// NewGate returns a Gate for the pace pace() (emails/s, +Inf: unpaced)
// that never lets more than limitCap (at least 1) sends through at once.
func NewGate(clk clock.Clock, pace func() float64, limitCap int) *Gate {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Gate{clock: clk, pace: pace, cap: max(1, limitCap), free: make(chan struct{})}
}

// Gate is a Gate at this Limiter's pace, on its clock.
func (l *Limiter) Gate(limitCap int) *Gate { return NewGate(l.cfg.Clock, l.Pace, limitCap) }

// Limit is how many sends may be on the wire now.
func (g *Gate) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limitLocked()
}

// Latency is the estimated time of one send (0: none measured yet).
func (g *Gate) Latency() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.latency
}

func (g *Gate) limitLocked() int {
	p := g.pace()
	if math.IsInf(p, 1) || math.IsNaN(p) {
		return g.cap
	}
	n := math.Ceil(p*g.latency.Seconds()) + 1
	if n >= float64(g.cap) {
		return g.cap
	}
	return max(1, int(n))
}

// Acquire waits until one more send may be on the wire, or ctx ends; the
// caller sends, then calls done exactly once.
func (g *Gate) Acquire(ctx context.Context) (done func(), err error) {
	for {
		g.mu.Lock()
		if g.inFlight < g.limitLocked() {
			g.inFlight++
			g.mu.Unlock()
			return g.release(g.clock.Now()), nil
		}
		free := g.free
		g.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
			return nil, fmt.Errorf("pace: gate: %w", ctx.Err())
		}
	}
}

func (g *Gate) release(start time.Time) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			took := max(0, g.clock.Now().Sub(start))
			g.mu.Lock()
			defer g.mu.Unlock()
			g.inFlight--
			if g.latency == 0 {
				g.latency = took
			} else {
				g.latency += time.Duration(GateAlpha * float64(took-g.latency))
			}
			close(g.free)
			g.free = make(chan struct{})
		})
	}
}
