package bus

// The consume loop: the one way linkpipe's workers (issuer, mailer,
// projector) take messages from a durable JetStream pull consumer.
//
// # Model
//
// A Loop pulls from one durable consumer and hands each message to a
// Handler, shaped like a watermill router handler: func(ctx, msg) error,
// wrapped by Middleware (the first of LoopConfig.Middleware is the
// outermost). The handler only does the work; what happens to the message
// afterwards is decided by the error it returns, the same for every worker:
//
//   - nil: the loop acks the message;
//   - ErrSettled (or an error wrapping it): the handler settled the message
//     itself, or handed it to something that will (the issuer's group
//     commit acks after its ledger write); the loop does nothing more;
//   - Poison(err): no retry can fix it: the loop copies the message to
//     deadletter.<LoopConfig.DeadLetter> (DeadLetter, reason err) and
//     terminates it, so it never blocks its queue; if the dead letter
//     cannot be written the message is retried like a transient failure;
//   - RetryAfter(err, d): NakWithDelay(d);
//   - any other error: a transient failure, NakWithDelay with
//     LoopConfig.Backoff's delay for the message's delivery count (doubling,
//     capped, with jitter).
//
// # Dispatch
//
// The dispatcher (the goroutine that pulls) sends each message one of three
// ways: Inline messages are handled by the dispatcher itself, in stream
// order, before any later message is dispatched; a message to which Lane
// gives a lane goes to that lane, whose one goroutine handles its messages
// one at a time, in the order they arrived (so messages with the same key
// are handled in order); every other message goes to the pool of
// Concurrency goroutines.
//
// # Keep-alive
//
// While a handler holds a message, the loop tells JetStream every KeepAlive
// (default a third of the consumer's AckWait) that it is still working on
// it (InProgress), so a slow handler's message is not redelivered to
// another replica meanwhile. Messages waiting in a lane are not kept alive.
//
// # Shutdown and failures
//
// When ctx ends the loop stops pulling (the iterator is drained), hands
// every message it had buffered but not started back to the stream at once
// (Nak, no delay: another replica takes it without waiting out AckWait),
// lets the handlers finish the messages they hold with a context that is
// not cancelled (half-done work would only be redone after AckWait; bound it
// with the Timeout middleware), and returns nil. When ctx carries a
// shutdown timeout (WithShutdownTimeout: what a worker's SIGTERM gives,
// LINKPIPE_SHUTDOWN_TIMEOUT), the handlers' context is cancelled that long
// after ctx ended, and a message whose handler then fails is handed back
// at once (Nak without delay) rather than retried after a backoff. A consumer that fails (it
// cannot be opened, or its iterator closes) is re-opened after
// RestartDelay, with the same handlers.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// shutdownKey carries a Loop's shutdown timeout in a context.
type shutdownKey struct{}

// WithShutdownTimeout returns ctx carrying d: a Loop run with it gives the
// handlers in flight d after ctx ends to finish, then cancels their
// context; what they still hold is handed back. Without it (or d <= 0)
// handlers finish however long they take.
func WithShutdownTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, shutdownKey{}, d)
}

// ShutdownTimeout is the shutdown timeout ctx carries (0: none).
func ShutdownTimeout(ctx context.Context) time.Duration {
	d, _ := ctx.Value(shutdownKey{}).(time.Duration)
	return max(d, 0)
}

// Handler handles one message; its error says what becomes of the message
// (see the model above).
type Handler func(ctx context.Context, msg jetstream.Msg) error

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Timeout bounds each message's handling to d.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, msg jetstream.Msg) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, msg)
		}
	}
}

// ErrSettled is returned by a handler that settled its message itself (or
// handed it to something that will): the loop neither acks nor naks it.
var ErrSettled = errors.New("bus: message settled by its handler")

// poisonError marks a message no retry can fix.
type poisonError struct{ err error }

func (p *poisonError) Error() string { return p.err.Error() }
func (p *poisonError) Unwrap() error { return p.err }

// Poison marks err as permanent: the message is dead-lettered with err as
// the reason, then terminated. Poison(nil) is nil.
func Poison(err error) error {
	if err == nil {
		return nil
	}
	return &poisonError{err: err}
}

// IsPoison reports whether err is (or wraps) a Poison error.
func IsPoison(err error) bool {
	var pe *poisonError
	return errors.As(err, &pe)
}

// retryError carries the delay a handler chose.
type retryError struct {
	err   error
	delay time.Duration
}

func (r *retryError) Error() string { return r.err.Error() }
func (r *retryError) Unwrap() error { return r.err }

// RetryAfter marks err as transient with the delay before the message is
// redelivered (instead of the loop's backoff). RetryAfter(nil, d) is nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryError{err: err, delay: d}
}

// DefaultJitter spreads retry delays ±20% so replicas do not retry in
// lockstep.
const DefaultJitter = 0.2

// Backoff is the redelivery delay of a transient failure: Min for the first
// delivery, doubling with each delivery up to Max, then spread uniformly by
// ±Jitter of itself (0.2: ±20%; 0: none).
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64
}

// Nominal is the delay before jitter after the given number of deliveries
// (1 the first time; 0 counts as 1).
func (b Backoff) Nominal(delivered uint64) time.Duration {
	d := b.Min
	if d <= 0 {
		return 0
	}
	for n := uint64(1); n < delivered && d < b.Max; n++ {
		d *= 2
	}
	return min(d, max(b.Max, b.Min))
}

// Delay is Nominal with jitter.
func (b Backoff) Delay(delivered uint64) time.Duration {
	d := b.Nominal(delivered)
	if b.Jitter <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 - b.Jitter + 2*b.Jitter*rand.Float64()))
}

// Outcome is what the loop did with a message.
type Outcome uint8

// Outcomes.
const (
	// Acked: the handler returned nil and the message was acked.
	Acked Outcome = iota + 1
	// Settled: the handler settled the message itself (ErrSettled).
	Settled
	// DeadLettered: Poison; copied to the dead-letter subject and terminated.
	DeadLettered
	// Retried: a transient failure; nak with a delay.
	Retried
	// HandedBack: never handled; given back at shutdown (nak, no delay).
	HandedBack
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Settled:
		return "settled"
	case DeadLettered:
		return "dead_lettered"
	case Retried:
		return "retried"
	case HandedBack:
		return "handed_back"
	}
	return "unknown"
}

// Settlement reports one message's fate to LoopConfig.OnSettled.
type Settlement struct {
	Msg     jetstream.Msg
	Outcome Outcome
	// Err: the handler's error (Poison's reason for DeadLettered); for
	// Retried it is wrapped with the subject, sequence, delivery and delay.
	Err error
	// Delay before redelivery (Retried).
	Delay time.Duration
	// Elapsed from the handler's start to the settlement.
	Elapsed time.Duration
}

// Loop defaults.
const (
	defaultRestartDelay = time.Second
	defaultLaneQueue    = 64
	defaultBackoffMin   = 100 * time.Millisecond
	defaultBackoffMax   = 30 * time.Second
	// defaultKeepAlive is used until the consumer's AckWait is known.
	defaultKeepAlive = time.Second
	// settleTimeout bounds the dead-letter publish, whatever time the
	// handler left on its context.
	settleTimeout = 5 * time.Second
)

// Log keys of the package.
const (
	keyStream    = "stream"
	keyConsumer  = "consumer"
	keySubject   = "subject"
	keySeq       = "seq"
	keyDelivered = "delivered"
	keyDelay     = "delay"
	keyReason    = "reason"
	keyErr       = "err"
	keyWorkers   = "concurrency"
)

// LoopConfig configures a Loop. JS, Stream, Consumer, DeadLetter and
// Handler are required.
type LoopConfig struct {
	JS jetstream.JetStream
	// Stream and Consumer name the durable pull consumer (it must exist:
	// Setup).
	Stream, Consumer string
	// DeadLetter is the source of the dead-letter subject:
	// deadletter.<DeadLetter>.
	DeadLetter string
	Handler    Handler
	// Middleware wraps Handler; the first is the outermost.
	Middleware []Middleware
	// Concurrency is the number of pool goroutines (default 1).
	Concurrency int
	// PullMax is how many messages the iterator buffers (default
	// Concurrency).
	PullMax int
	// Inline, if set, picks the messages the dispatcher handles itself,
	// in stream order, before it dispatches later ones.
	Inline func(jetstream.Msg) bool
	// Lane, if set with Lanes > 0, picks the messages handled in order on
	// lane n (modulo Lanes); ok false sends a message to the pool.
	Lane  func(jetstream.Msg) (lane int, ok bool)
	Lanes int
	// LaneQueue is the buffer of each lane (default 64).
	LaneQueue int
	// KeepAlive is the InProgress interval while a handler runs (0: a
	// third of the consumer's AckWait; negative: never).
	KeepAlive time.Duration
	// Backoff of transient failures (zero value: 100ms doubling to 30s,
	// DefaultJitter).
	Backoff Backoff
	// RestartDelay is the pause before re-opening a failed consumer
	// (default 1s).
	RestartDelay time.Duration
	// OnSettled, if set, is called after each message is settled (from
	// the goroutine that handled it).
	OnSettled func(Settlement)
	// Log defaults to a logger that discards.
	Log *slog.Logger
}

// Loop consumes one durable consumer; see the model above.
type Loop struct {
	cfg     LoopConfig
	handler Handler
	log     *slog.Logger
	// keepAlive is the current InProgress interval in nanoseconds.
	keepAlive atomic.Int64
}

// NewLoop checks cfg and returns a Loop; Run consumes.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("bus: LoopConfig.JS is required")
	case cfg.Stream == "" || cfg.Consumer == "":
		return nil, errors.New("bus: LoopConfig.Stream and Consumer are required")
	case cfg.DeadLetter == "":
		return nil, errors.New("bus: LoopConfig.DeadLetter is required")
	case cfg.Handler == nil:
		return nil, errors.New("bus: LoopConfig.Handler is required")
	case cfg.Lanes > 0 && cfg.Lane == nil:
		return nil, errors.New("bus: LoopConfig.Lanes needs Lane")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.PullMax <= 0 {
		cfg.PullMax = cfg.Concurrency
	}
	if cfg.LaneQueue <= 0 {
		cfg.LaneQueue = defaultLaneQueue
	}
	if cfg.Lane == nil {
		cfg.Lanes = 0
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = Backoff{Min: defaultBackoffMin, Max: defaultBackoffMax, Jitter: DefaultJitter}
	}
	if cfg.RestartDelay <= 0 {
		cfg.RestartDelay = defaultRestartDelay
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := cfg.Handler
	for i := len(cfg.Middleware) - 1; i >= 0; i-- {
		h = cfg.Middleware[i](h)
	}
	l := &Loop{cfg: cfg, handler: h, log: cfg.Log.With(keyConsumer, cfg.Consumer)}
	l.keepAlive.Store(int64(defaultKeepAlive))
	if cfg.KeepAlive > 0 {
		l.keepAlive.Store(int64(cfg.KeepAlive))
	}
	return l, nil
}

// Run consumes until ctx ends, then hands back what it buffered, lets the
// handlers finish, and returns nil. A consumer that fails is re-opened.
func (l *Loop) Run(ctx context.Context) error {
	hctx := context.WithoutCancel(ctx)
	if grace := ShutdownTimeout(ctx); grace > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithCancel(hctx)
		defer cancel()
		done := make(chan struct{})
		defer close(done) // before cancel: the handlers have returned
		go func() {
			select {
			case <-done:
				return
			case <-ctx.Done():
			}
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				l.log.Warn("bus: shutdown timeout; handing back what is still in flight", keyDelay, grace)
				cancel()
			}
		}()
	}
	d := &dispatcher{l: l, ctx: ctx, hctx: hctx, work: make(chan jetstream.Msg)}
	// Slots hold the message each goroutine is handling, for keep-alive:
	// one per pool goroutine, one per lane, one for the dispatcher.
	d.slots = make([]slot, l.cfg.Concurrency+l.cfg.Lanes+1)
	var wg sync.WaitGroup
	for n := range l.cfg.Concurrency {
		s := &d.slots[n]
		wg.Go(func() {
			for msg := range d.work {
				d.handle(s, msg)
			}
		})
	}
	d.lanes = make([]chan jetstream.Msg, l.cfg.Lanes)
	for n := range d.lanes {
		d.lanes[n] = make(chan jetstream.Msg, l.cfg.LaneQueue)
		s := &d.slots[l.cfg.Concurrency+n]
		wg.Go(func() {
			for msg := range d.lanes[n] {
				if ctx.Err() != nil {
					l.handBack(msg) // queued, not started
					continue
				}
				d.handle(s, msg)
			}
		})
	}
	keeperDone := make(chan struct{})
	var keeper sync.WaitGroup
	if l.cfg.KeepAlive >= 0 {
		keeper.Go(func() { l.keepAliveLoop(d.slots, keeperDone) })
	}
	defer func() {
		close(d.work)
		for _, c := range d.lanes {
			close(c)
		}
		wg.Wait()
		close(keeperDone)
		keeper.Wait()
	}()
	for {
		err := l.consume(ctx, d)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("bus: consumer stopped; re-opening", keyStream, l.cfg.Stream, keyErr, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.cfg.RestartDelay):
		}
	}
}

// consume runs one message iterator until ctx ends or the iterator fails.
func (l *Loop) consume(ctx context.Context, d *dispatcher) error {
	cons, err := l.cfg.JS.Consumer(ctx, l.cfg.Stream, l.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("bus: consumer %s on %s: %w", l.cfg.Consumer, l.cfg.Stream, err)
	}
	if info := cons.CachedInfo(); l.cfg.KeepAlive == 0 && info != nil && info.Config.AckWait > 0 {
		l.keepAlive.Store(int64(info.Config.AckWait / 3))
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(l.cfg.PullMax))
	if err != nil {
		return fmt.Errorf("bus: messages of %s: %w", l.cfg.Consumer, err)
	}
	defer it.Stop()
	// Drain: no new pulls, but the messages already buffered are still
	// returned by Next, so they can be handed back below.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	l.log.Info("bus: consuming", keyStream, l.cfg.Stream, keyWorkers, l.cfg.Concurrency)
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("bus: %s: %w", l.cfg.Consumer, err)
			}
			l.log.Warn("bus: consumer hiccup", keyErr, err)
			continue
		}
		if ctx.Err() != nil {
			l.handBack(msg) // shutting down: give it back at once
			continue
		}
		d.dispatch(msg)
	}
}

// dispatcher sends messages inline, to lanes or to the pool.
type dispatcher struct {
	l         *Loop
	ctx, hctx context.Context
	work      chan jetstream.Msg
	lanes     []chan jetstream.Msg
	slots     []slot
}

func (d *dispatcher) dispatch(msg jetstream.Msg) {
	cfg := &d.l.cfg
	if cfg.Inline != nil && cfg.Inline(msg) {
		d.handle(&d.slots[len(d.slots)-1], msg)
		return
	}
	to := d.work
	if len(d.lanes) > 0 {
		if n, ok := cfg.Lane(msg); ok {
			n %= len(d.lanes)
			if n < 0 {
				n += len(d.lanes)
			}
			to = d.lanes[n]
		}
	}
	select {
	case to <- msg:
	case <-d.ctx.Done():
		d.l.handBack(msg)
	}
}

// handle processes msg, keeping it alive meanwhile.
func (d *dispatcher) handle(s *slot, msg jetstream.Msg) {
	s.set(msg)
	defer s.set(nil)
	d.l.Process(d.hctx, msg)
}

// slot is the message one goroutine is handling (nil: none).
type slot struct {
	mu  sync.Mutex
	msg jetstream.Msg
}

func (s *slot) set(msg jetstream.Msg) {
	s.mu.Lock()
	s.msg = msg
	s.mu.Unlock()
}

func (s *slot) get() jetstream.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msg
}

// keepAliveLoop sends InProgress for every message being handled, every
// keep-alive interval, until done closes.
func (l *Loop) keepAliveLoop(slots []slot, done <-chan struct{}) {
	t := time.NewTimer(time.Duration(l.keepAlive.Load()))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		for n := range slots {
			if msg := slots[n].get(); msg != nil {
				// Fails harmlessly if the message was settled meanwhile.
				_ = msg.InProgress()
			}
		}
		t.Reset(time.Duration(l.keepAlive.Load()))
	}
}

// Process runs the loop's handler (with its middleware) on msg with ctx,
// settles msg by the handler's error, reports the settlement to OnSettled
// and returns it. Run calls it for every message; a worker may call it to
// handle one message synchronously.
func (l *Loop) Process(ctx context.Context, msg jetstream.Msg) Settlement {
	start := time.Now()
	err := l.handler(ctx, msg)
	if err != nil && ctx.Err() != nil && !IsPoison(err) && !errors.Is(err, ErrSettled) {
		// Cut short by the shutdown timeout: another replica takes it now.
		l.handBack(msg)
		return Settlement{Msg: msg, Outcome: HandedBack, Err: err, Elapsed: time.Since(start)}
	}
	s := l.settle(ctx, msg, err)
	s.Elapsed = time.Since(start)
	if l.cfg.OnSettled != nil {
		l.cfg.OnSettled(s)
	}
	return s
}

// settle acks, terminates or naks msg according to the handler's err.
func (l *Loop) settle(ctx context.Context, msg jetstream.Msg, err error) Settlement {
	s := Settlement{Msg: msg, Err: err}
	var pe *poisonError
	switch {
	case err == nil:
		s.Outcome = Acked
		if aerr := msg.Ack(); aerr != nil {
			// The work is done; a redelivery finds it done.
			l.log.Warn("bus: ack failed", keySubject, msg.Subject(), keyErr, aerr)
		}
		return s
	case errors.Is(err, ErrSettled):
		s.Outcome, s.Err = Settled, nil
		return s
	case errors.As(err, &pe):
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		derr := DeadLetter(dctx, l.cfg.JS, l.cfg.DeadLetter, msg, pe.err)
		cancel()
		if derr != nil {
			return l.retry(msg, errors.Join(pe.err, derr), 0)
		}
		if terr := msg.Term(); terr != nil {
			l.log.Warn("bus: term failed", keySubject, msg.Subject(), keyErr, terr)
		}
		s.Outcome, s.Err = DeadLettered, pe.err
		seq, delivered := position(msg)
		l.log.Warn("bus: message dead-lettered", keySubject, msg.Subject(), keySeq, seq,
			keyDelivered, delivered, keyReason, pe.err.Error())
		return s
	}
	var re *retryError
	if errors.As(err, &re) {
		return l.retry(msg, err, max(re.delay, 0))
	}
	return l.retry(msg, err, -1)
}

// retry naks msg with delay (negative: the backoff's).
func (l *Loop) retry(msg jetstream.Msg, cause error, delay time.Duration) Settlement {
	seq, delivered := position(msg)
	if delay < 0 {
		delay = l.cfg.Backoff.Delay(delivered)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		l.log.Warn("bus: nak failed; the message returns after AckWait", keySubject, msg.Subject(), keyErr, err)
	}
	l.log.Warn("bus: handler failed; will retry", keySubject, msg.Subject(), keySeq, seq,
		keyDelivered, delivered, keyDelay, delay, keyErr, cause)
	return Settlement{Msg: msg, Outcome: Retried, Delay: delay,
		Err: fmt.Errorf("bus: %s seq %d (delivery %d, retry in %s): %w", msg.Subject(), seq, delivered, delay, cause)}
}

// handBack gives a message that was never handled back at once.
func (l *Loop) handBack(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		l.log.Debug("bus: nak at shutdown failed", keySubject, msg.Subject(), keyErr, err)
	}
	if l.cfg.OnSettled != nil {
		l.cfg.OnSettled(Settlement{Msg: msg, Outcome: HandedBack})
	}
}

// position is msg's stream sequence and delivery count (1 if unknown).
func position(msg jetstream.Msg) (seq, delivered uint64) {
	md, err := msg.Metadata()
	if err != nil {
		return 0, 1
	}
	return md.Sequence.Stream, max(md.NumDelivered, 1)
}
