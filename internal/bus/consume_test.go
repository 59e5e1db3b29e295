package bus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// loopEnv is a server with a stream T (subjects t.>) and its durable
// consumer "c".
type loopEnv struct {
	t   *testing.T
	js  jetstream.JetStream
	ctx context.Context
}

const (
	loopStream   = "T"
	loopConsumer = "c"
	loopSource   = "t" // deadletter.t
)

func newLoopEnv(t *testing.T, ackWait time.Duration) *loopEnv {
	t.Helper()
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: loopStream, Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: loopConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxAckPending: 1000,
	}); err != nil {
		t.Fatal(err)
	}
	return &loopEnv{t: t, js: js, ctx: ctx}
}

// run starts a loop on the consumer; it is stopped (and must return nil)
// when the test ends, or earlier by the returned stop.
func (e *loopEnv) run(cfg bus.LoopConfig) (stop func()) {
	e.t.Helper()
	cfg.JS, cfg.Stream, cfg.Consumer, cfg.DeadLetter = e.js, loopStream, loopConsumer, loopSource
	l, err := bus.NewLoop(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Error("Run did not return")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *loopEnv) publish(subj, data string) uint64 {
	e.t.Helper()
	ack, err := e.js.Publish(e.ctx, subj, []byte(data))
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

func (e *loopEnv) info() *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(e.ctx, loopStream, loopConsumer)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info
}

// idle: everything delivered was settled for good.
func (e *loopEnv) idle() bool {
	info := e.info()
	return info.NumPending == 0 && info.NumAckPending == 0
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settlements records what the loop reports.
type settlements struct {
	mu  sync.Mutex
	all []bus.Settlement
}

func (s *settlements) add(x bus.Settlement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, x)
}

func (s *settlements) of(o bus.Outcome) []bus.Settlement {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []bus.Settlement
	for _, x := range s.all {
		if x.Outcome == o {
			out = append(out, x)
		}
	}
	return out
}

func TestLoopPoisonIsDeadLetteredTerminatedAndTheNextFlows(t *testing.T) {
	e := newLoopEnv(t, 30*time.Second)
	var seen settlements
	var good atomic.Int32
	e.run(bus.LoopConfig{
		Handler: func(_ context.Context, msg jetstream.Msg) error {
			if string(msg.Data()) == "bad" {
				return fmt.Errorf("decoding: %w", bus.Poison(errors.New("not a t message")))
			}
			good.Add(1)
			return nil
		},
		OnSettled: seen.add,
	})
	badSeq := e.publish("t.x", "bad")
	e.publish("t.x", "good")
	waitUntil(t, "the good message", func() bool { return good.Load() == 1 })
	waitUntil(t, "the consumer to settle both", e.idle)
	if info := e.info(); info.NumRedelivered != 0 {
		t.Errorf("%d redelivered: the poison message was not terminated", info.NumRedelivered)
	}
	dl, err := e.js.Stream(e.ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetLastMsgForSubject(e.ctx, bus.DeadLetterPrefix+loopSource)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if r := m.Header.Get(bus.HeaderReason); r != "not a t message" {
		t.Errorf("reason %q", r)
	}
	if s := m.Header.Get(bus.HeaderSourceSeq); s != strconv.FormatUint(badSeq, 10) || string(m.Data) != "bad" {
		t.Errorf("dead letter of seq %s: %q", s, m.Data)
	}
	if d := seen.of(bus.DeadLettered); len(d) != 1 || d[0].Err.Error() != "not a t message" {
		t.Errorf("dead-lettered settlements %+v", d)
	}
	if a := seen.of(bus.Acked); len(a) != 1 {
		t.Errorf("acked settlements %+v", a)
	}
}

func TestLoopRetriesTransientFailuresWithBackoff(t *testing.T) {
	// AckWait is far longer than the test: a redelivery can only come
	// from the loop's nak.
	e := newLoopEnv(t, time.Minute)
	type delivery struct {
		n  uint64
		at time.Time
	}
	var mu sync.Mutex
	var got []delivery
	var seen settlements
	backoff := bus.Backoff{Min: 150 * time.Millisecond, Max: 300 * time.Millisecond}
	e.run(bus.LoopConfig{
		Handler: func(_ context.Context, msg jetstream.Msg) error {
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			mu.Lock()
			got = append(got, delivery{md.NumDelivered, time.Now()})
			mu.Unlock()
			switch {
			case string(msg.Data()) == "chosen" && md.NumDelivered == 1:
				return bus.RetryAfter(errors.New("throttled"), 50*time.Millisecond)
			case string(msg.Data()) == "flaky" && md.NumDelivered < 4:
				return errors.New("try again")
			}
			return nil
		},
		Backoff:   backoff,
		OnSettled: seen.add,
	})
	e.publish("t.x", "flaky")
	waitUntil(t, "the fourth delivery to be acked", func() bool { return len(seen.of(bus.Acked)) == 1 })
	mu.Lock()
	if len(got) != 4 {
		t.Fatalf("deliveries %+v, want 4", got)
	}
	retried := seen.of(bus.Retried)
	if len(retried) != 3 {
		t.Fatalf("retried settlements %+v", retried)
	}
	for i, r := range retried {
		want := backoff.Nominal(uint64(i + 1)) // 150ms, 300ms, 300ms
		if r.Delay != want || !strings.Contains(r.Err.Error(), "try again") {
			t.Errorf("retry %d: delay %s (want %s), err %v", i+1, r.Delay, want, r.Err)
		}
		if got[i+1].n != uint64(i+2) {
			t.Errorf("delivery %d has NumDelivered %d", i+2, got[i+1].n)
		}
		// The server holds a nak'd message at least its delay.
		if gap := got[i+1].at.Sub(got[i].at); gap < want {
			t.Errorf("redelivery %d after %s, before its delay %s", i+1, gap, want)
		}
	}
	mu.Unlock()

	e.publish("t.x", "chosen")
	waitUntil(t, "the chosen-delay message to be acked", func() bool { return len(seen.of(bus.Acked)) == 2 })
	if r := seen.of(bus.Retried); len(r) != 4 || r[3].Delay != 50*time.Millisecond {
		t.Errorf("RetryAfter settlement %+v", r[len(r)-1])
	}
	waitUntil(t, "the consumer to settle", e.idle)
}

func TestLoopShutdownHandsBufferedMessagesBack(t *testing.T) {
	// AckWait far beyond the test's timeouts: the second loop can only
	// get the messages soon if the first gives them back.
	e := newLoopEnv(t, 5*time.Minute)
	const n = 20
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseA := func() { releaseOnce.Do(func() { close(release) }) }
	started := make(chan struct{}, n)
	var ctxErrAtRelease atomic.Value
	var handledA atomic.Int32
	stopA := e.run(bus.LoopConfig{
		Concurrency: 1,
		PullMax:     n,
		Handler: func(ctx context.Context, _ jetstream.Msg) error {
			started <- struct{}{}
			<-release
			ctxErrAtRelease.Store(fmt.Sprint(ctx.Err()))
			handledA.Add(1)
			return nil
		},
	})
	t.Cleanup(releaseA) // before stopA's cleanup (LIFO), should the test fail early
	for i := range n {
		e.publish("t.x", strconv.Itoa(i))
	}
	<-started
	waitUntil(t, "every message to be buffered by the first loop", func() bool { return e.info().NumAckPending == n })

	stopped := make(chan struct{})
	go func() { stopA(); close(stopped) }()
	var handledB atomic.Int32
	e.run(bus.LoopConfig{
		Concurrency: 4,
		Handler: func(context.Context, jetstream.Msg) error {
			handledB.Add(1)
			return nil
		},
	})
	// While the first loop's handler still holds its message, the others
	// are already back and handled by the second.
	waitUntil(t, "the second loop to get the buffered messages", func() bool { return handledB.Load() == n-1 })
	select {
	case <-stopped:
		t.Fatal("Run returned while its handler was still running")
	default:
	}
	releaseA()
	<-stopped
	if handledA.Load() != 1 {
		t.Errorf("first loop handled %d", handledA.Load())
	}
	if s := ctxErrAtRelease.Load(); s != "<nil>" {
		t.Errorf("in-flight handler's context: %v, want not cancelled", s)
	}
	waitUntil(t, "the consumer to settle", e.idle)
	if handledB.Load() != n-1 {
		t.Errorf("second loop handled %d, want %d", handledB.Load(), n-1)
	}
}

func TestLoopKeepAliveHoldsASlowHandlersMessage(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive time.Duration
		redeliver bool // the message reaches a second handler
	}{
		{"keep-alive", 0, false}, // default: a third of AckWait
		{"control without keep-alive", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// AckWait 2s: the keep-alive (every ~670ms) has margin on a
			// loaded 2-core machine.
			e := newLoopEnv(t, 2*time.Second)
			var calls, done atomic.Int32
			h := func(context.Context, jetstream.Msg) error {
				calls.Add(1)
				time.Sleep(5 * time.Second) // 2.5 AckWaits
				done.Add(1)
				return nil
			}
			// Two replicas: a message the first lets lapse goes to the
			// second.
			e.run(bus.LoopConfig{Handler: h, KeepAlive: tc.keepAlive})
			e.run(bus.LoopConfig{Handler: h, KeepAlive: tc.keepAlive})
			e.publish("t.x", "slow")
			waitUntil(t, "the first handler to finish", func() bool { return done.Load() >= 1 })
			waitUntil(t, "the consumer to settle", e.idle)
			waitUntil(t, "every handler to finish", func() bool { return done.Load() == calls.Load() })
			if c := calls.Load(); (c > 1) != tc.redeliver {
				t.Errorf("handled %d times (redelivery expected: %v)", c, tc.redeliver)
			}
		})
	}
}

func TestLoopLanesKeepOrderAndInlineRunsAlone(t *testing.T) {
	e := newLoopEnv(t, 30*time.Second)
	const keys, perKey = 8, 25
	var mu sync.Mutex
	last := map[string]int{}
	var disorder []string
	var inlineSeq atomic.Uint64
	var inlineDone atomic.Bool
	var early atomic.Int32
	var handled atomic.Int32
	e.run(bus.LoopConfig{
		Concurrency: 8,
		Lanes:       3, // fewer lanes than keys: lanes are shared
		Lane: func(msg jetstream.Msg) (int, bool) {
			k, _, ok := strings.Cut(string(msg.Data()), ":")
			if !ok {
				return 0, false
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(k, "k"))
			return n, true
		},
		Inline: func(msg jetstream.Msg) bool { return msg.Subject() == "t.inline" },
		Handler: func(_ context.Context, msg jetstream.Msg) error {
			defer handled.Add(1)
			if msg.Subject() == "t.inline" {
				time.Sleep(100 * time.Millisecond)
				inlineDone.Store(true)
				return nil
			}
			// A message after the inline one starts only once it is done.
			if md, err := msg.Metadata(); err != nil {
				return err
			} else if is := inlineSeq.Load(); is != 0 && md.Sequence.Stream > is && !inlineDone.Load() {
				early.Add(1)
			}
			k, v, ok := strings.Cut(string(msg.Data()), ":")
			if !ok { // pool message
				return nil
			}
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
			n, _ := strconv.Atoi(v)
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := last[k]; ok && n != prev+1 {
				disorder = append(disorder, fmt.Sprintf("%s: %d after %d", k, n, prev))
			}
			last[k] = n
			return nil
		},
	})
	total := 0
	for i := range perKey {
		for k := range keys {
			e.publish("t.lane", fmt.Sprintf("k%d:%d", k, i))
			total++
		}
		if i == perKey/2 {
			inlineSeq.Store(e.publish("t.inline", "settings"))
			total++
		}
		e.publish("t.pool", "p"+strconv.Itoa(i))
		total++
	}
	waitUntil(t, "every message", func() bool { return handled.Load() == int32(total) })
	waitUntil(t, "the consumer to settle", e.idle)
	mu.Lock()
	defer mu.Unlock()
	if len(disorder) > 0 {
		t.Errorf("out of order within a lane: %v", disorder)
	}
	if len(last) != keys {
		t.Errorf("%d keys seen", len(last))
	}
	if n := early.Load(); n != 0 {
		t.Errorf("%d later messages started before the inline message was done", n)
	}
	if !inlineDone.Load() {
		t.Error("inline message not handled")
	}
}

func TestLoopReopensAFailedConsumer(t *testing.T) {
	e := newLoopEnv(t, 30*time.Second)
	var handled atomic.Int32
	e.run(bus.LoopConfig{
		RestartDelay: 50 * time.Millisecond,
		Handler: func(context.Context, jetstream.Msg) error {
			handled.Add(1)
			return nil
		},
	})
	e.publish("t.x", "1")
	waitUntil(t, "the first message", func() bool { return handled.Load() == 1 })
	s, err := e.js.Stream(e.ctx, loopStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.info().Config
	if err := s.DeleteConsumer(e.ctx, loopConsumer); err != nil {
		t.Fatal(err)
	}
	cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	if _, err := s.CreateConsumer(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.publish("t.x", "2")
	waitUntil(t, "the message after the consumer came back", func() bool { return handled.Load() == 2 })
}

func TestLoopAcksNilAndLeavesSettledMessagesToTheHandler(t *testing.T) {
	e := newLoopEnv(t, 30*time.Second)
	ackErrs := make(chan error, 1)
	var seen settlements
	e.run(bus.LoopConfig{
		Handler: func(_ context.Context, msg jetstream.Msg) error {
			if string(msg.Data()) != "mine" {
				return nil
			}
			go func() {
				time.Sleep(50 * time.Millisecond)
				ackErrs <- msg.Ack() // ErrMsgAlreadyAckd if the loop had settled it
			}()
			return fmt.Errorf("queued: %w", bus.ErrSettled)
		},
		Middleware: []bus.Middleware{bus.Timeout(time.Second)},
		OnSettled:  seen.add,
	})
	e.publish("t.x", "mine")
	e.publish("t.x", "loop's")
	if err := <-ackErrs; err != nil {
		t.Errorf("the handler's own ack: %v", err)
	}
	waitUntil(t, "the consumer to settle", e.idle)
	if s, a := seen.of(bus.Settled), seen.of(bus.Acked); len(s) != 1 || len(a) != 1 || s[0].Err != nil {
		t.Errorf("settled %+v, acked %+v", s, a)
	}
}

func TestLoopMiddlewareOrder(t *testing.T) {
	var order []string
	mw := func(name string) bus.Middleware {
		return func(next bus.Handler) bus.Handler {
			return func(ctx context.Context, msg jetstream.Msg) error {
				order = append(order, name)
				return next(ctx, msg)
			}
		}
	}
	e := newLoopEnv(t, 30*time.Second)
	done := make(chan struct{})
	e.run(bus.LoopConfig{
		Middleware: []bus.Middleware{mw("outer"), mw("inner")},
		Handler: func(ctx context.Context, _ jetstream.Msg) error {
			order = append(order, "handler")
			close(done)
			return nil
		},
	})
	e.publish("t.x", "1")
	<-done
	if got := strings.Join(order, ","); got != "outer,inner,handler" {
		t.Errorf("order %s", got)
	}
}

func TestBackoff(t *testing.T) {
	b := bus.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Jitter: bus.DefaultJitter}
	for n, want := range map[uint64]time.Duration{
		0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 9: 25600 * time.Millisecond, 10: 30 * time.Second, 1000: 30 * time.Second,
	} {
		if got := b.Nominal(n); got != want {
			t.Errorf("Nominal(%d) = %s, want %s", n, got, want)
		}
		spread := map[time.Duration]bool{}
		for range 50 {
			d := b.Delay(n)
			if d < want*8/10 || d > want*12/10 {
				t.Fatalf("Delay(%d) = %s, outside ±20%% of %s", n, d, want)
			}
			spread[d] = true
		}
		if len(spread) < 2 {
			t.Errorf("Delay(%d) has no jitter", n)
		}
	}
	if d := (bus.Backoff{Min: time.Second, Max: time.Second}).Delay(5); d != time.Second {
		t.Errorf("no jitter: %s", d)
	}
	if d := (bus.Backoff{}).Nominal(1 << 40); d != 0 {
		t.Errorf("zero backoff: %s", d)
	}
}

func TestRegisterSharesAnAlreadyRegisteredCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	newC := func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"l"})
	}
	a, b := newC(), newC()
	if err := bus.Register(reg, &a); err != nil {
		t.Fatal(err)
	}
	if err := bus.Register(reg, &b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the second registration did not get the first collector")
	}
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "other help"})
	if err := bus.Register(reg, &other); err == nil {
		t.Error("a conflicting collector was accepted")
	}
	c := newC()
	if err := bus.Register(nil, &c); err != nil {
		t.Error(err)
	}
}
