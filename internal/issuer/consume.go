package issuer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// Run consumes the durable consumer "issuer" on ACTIONS with Concurrency
// parallel handlers until ctx ends, on the bus consume loop (bus.Loop):
// practice settings are handled inline, in stream order, before later
// actions are dispatched (they must be in force for the actions that
// follow them); the actions of one appointment take one lane, in order
// (apptLane); the rest go to the pool. On the way out it stops pulling,
// hands the messages it had buffered back to the stream (nak, for another
// replica to take at once), lets the handlers finish the messages they
// hold, and returns nil. A consumer that fails is re-opened.
//
// Handlers do not wait for the ledger: a finished message goes to one
// settler goroutine that writes the ledger entries of every message
// finished meanwhile in one bbolt transaction (a group commit: one fsync
// for many messages), then acks them.
func (i *Issuer) Run(ctx context.Context) error {
	settle := make(chan settlement, settleQueue)
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		i.settleLoop(settle)
	}()
	var prune sync.WaitGroup
	prune.Go(func() { i.pruneLoop(ctx) })
	defer func() {
		close(settle) // the loop has returned: no handler is left to send
		<-settled
		prune.Wait()
	}()
	loop, err := i.newLoop(func(s settlement) {
		if i.routes[s.msg.Subject()].inline {
			i.settleNow(s)
			return
		}
		settle <- s
	})
	if err != nil {
		return err
	}
	return loop.Run(ctx)
}

// newLoop is the consume loop whose handler passes finished messages to
// settle.
func (i *Issuer) newLoop(settle func(settlement)) (*bus.Loop, error) {
	l, err := bus.NewLoop(bus.LoopConfig{
		JS: i.js, Stream: bus.StreamActions, Consumer: bus.ConsumerIssuer, DeadLetter: deadLetterSource,
		Handler:     i.handler(settle),
		Middleware:  []bus.Middleware{bus.Timeout(handleTimeout)},
		Concurrency: i.concurrency,
		PullMax:     max(4*i.concurrency, 256),
		Inline: func(msg jetstream.Msg) bool {
			r, ok := i.routes[msg.Subject()]
			return ok && r.inline
		},
		Lane: apptLane, Lanes: apptLanes, LaneQueue: laneQueue,
		Backoff:   retryBackoff(),
		OnSettled: i.onSettled,
		Log:       i.log,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return l, nil
}

// retryBackoff is the redelivery delay of a failed action.
func retryBackoff() bus.Backoff {
	return bus.Backoff{Min: backoffMin, Max: backoffMax, Jitter: bus.DefaultJitter}
}

// Handle handles one message of ACTIONS and settles it before returning:
// ledger entry then ack when done (or already done), dead letter then term
// for poison, nak with backoff for a transient failure. It returns an
// error only in the last case (the message will be redelivered) or when
// msg is not a JetStream message.
func (i *Issuer) Handle(ctx context.Context, msg jetstream.Msg) error {
	if s := i.direct.Process(ctx, msg); s.Outcome == bus.Retried {
		return fmt.Errorf("issuer: %w", s.Err)
	}
	return nil
}

// handler does a message's work and passes a finished one to settle
// (bus.ErrSettled); poison and failures are returned for the loop to
// settle.
func (i *Issuer) handler(settle func(settlement)) bus.Handler {
	return func(ctx context.Context, msg jetstream.Msg) error {
		start := time.Now()
		outcome, s, err := i.handle(ctx, msg)
		if err != nil {
			return err
		}
		settle(s)
		i.m.observe(msg.Subject(), outcome, time.Since(start))
		return bus.ErrSettled
	}
}

// onSettled records the messages the loop settled: dead letters and retries.
func (i *Issuer) onSettled(s bus.Settlement) {
	switch s.Outcome {
	case bus.DeadLettered:
		i.m.deadLetter(s.Msg.Subject())
		i.m.observe(s.Msg.Subject(), outcomeDeadLetter, s.Elapsed)
	case bus.Retried:
		i.m.observe(s.Msg.Subject(), outcomeRetry, s.Elapsed)
	}
}

// handle does a message's work. A finished message is returned as a
// settlement for the caller to record and ack; an error is bus.Poison
// (dead letter) or transient (retry).
func (i *Issuer) handle(ctx context.Context, msg jetstream.Msg) (string, settlement, error) {
	subject := msg.Subject()
	md, err := msg.Metadata()
	if err != nil {
		return outcomeRetry, settlement{}, fmt.Errorf("issuer: %s is not a JetStream message: %w", subject, err)
	}
	log := i.log.With(keySubject, subject, keySeq, md.Sequence.Stream)
	a, err := events.Decode(subject, msg.Data())
	if err == nil {
		if _, ok := i.routes[subject]; !ok {
			err = fmt.Errorf("%w: %q has no handler", events.ErrUnknownSubject, subject)
		}
	}
	if err != nil {
		return outcomeDeadLetter, settlement{}, bus.Poison(err)
	}
	env := events.EnvelopeOf(a)
	log = log.With(keyEventID, env.EventID, keyPracticeID, env.PracticeID)
	d := &delivery{msg: msg, seq: md.Sequence.Stream, at: md.Timestamp, delivered: md.NumDelivered, action: a, env: env, log: log}
	r := i.routes[subject]

	key := ledgerKey(subject, env)
	if r.ledger {
		rec, ok, err := i.ledger.get(key)
		switch {
		case err != nil:
			log.Warn("issuer ledger unreadable; asking JetStream", keyErr, err)
		case ok:
			log.Debug("action already handled (ledger)", keyLinkID, rec.LinkID)
			return outcomeDuplicate, settlement{msg: msg, log: log}, nil
		}
	}

	res, err := r.handle(ctx, d)
	if err != nil {
		return outcomeRetry, settlement{}, err // poison or transient: the loop settles it
	}
	s := settlement{msg: msg, log: log}
	if r.ledger {
		// Every outcome of a handler is final (a transient failure
		// returned an error above), so a redelivery may be acked at once.
		s.key, s.rec = key, ledgerRecord{LinkID: res.linkID, At: i.clock.Now()}
	}
	return res.outcome, s, nil
}

// settlement is a finished message: its ledger entry (if any) is written,
// then it is acked.
type settlement struct {
	msg jetstream.Msg
	log *slog.Logger
	key []byte // nil: nothing to record
	rec ledgerRecord
}

// settleNow records and acks one message.
func (i *Issuer) settleNow(s settlement) {
	if s.key != nil {
		if err := i.ledger.put(s.key, s.rec); err != nil {
			// JetStream already holds everything; the ledger only saves
			// a redelivery the round trips, so this is not fatal.
			s.log.Warn("issuer ledger write failed", keyLinkID, s.rec.LinkID, keyErr, err)
		}
	}
	i.ack(s.msg, s.log)
}

// settleLoop records and acks finished messages in groups: whatever
// arrived while the previous group was being written forms the next.
func (i *Issuer) settleLoop(q <-chan settlement) {
	group := make([]settlement, 0, settleGroup)
	entries := make([]ledgerEntry, 0, settleGroup)
	for s := range q {
		group = append(group[:0], s)
	fill:
		for len(group) < settleGroup {
			select {
			case s, ok := <-q:
				if !ok {
					break fill
				}
				group = append(group, s)
			default:
				break fill
			}
		}
		entries = entries[:0]
		for _, s := range group {
			if s.key != nil {
				entries = append(entries, ledgerEntry{key: s.key, rec: s.rec})
			}
		}
		if err := i.ledger.putAll(entries); err != nil {
			i.log.Warn("issuer ledger write failed", keyErr, err)
		}
		for _, s := range group {
			i.ack(s.msg, s.log)
		}
	}
}

func (i *Issuer) ack(msg jetstream.Msg, log *slog.Logger) {
	if err := msg.Ack(); err != nil {
		// The work is done and idempotent: a redelivery is only acked again.
		log.Warn("issuer ack failed", keyErr, err)
	}
}
