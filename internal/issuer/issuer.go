// Package issuer owns the issuing side of linkpipe: it consumes the actions
// practice systems publish to the ACTIONS stream (durable consumer "issuer",
// shared by every replica), mints each link from its action's event id,
// makes it the current link of its scope with a conditional publish on
// SCOPES, records it as links.<link_id>.issued on LINKS, queues its email as
// mail.cmd.<mail_id> on MAIL, and stores practice settings. It also owns the
// appointment lifecycle (scheduled, rescheduled, canceled: changes to the
// appointment's scope, confirmation/moved/canceled emails), the reminders
// planned as JetStream message schedules on ACTIONS
// (actions.schedule.reminder.<practice>.<appointment>.<offset>, firing
// actions.appointment.reminder), and revocation of a client's links. Poison
// actions are dead-lettered with the reason; transient failures are retried
// with backoff.
//
// The rules of each action, and how out-of-order handling (replicas and
// parallel handlers take messages concurrently) is resolved, are documented
// on the handlers in appointments.go, reminders.go and revoke.go.
//
// Every step is idempotent and checked against JetStream, which is the
// truth: a redelivered or re-published action (on this replica or another,
// before or after the de-duplication window) yields the same link, one
// scope change, one issued event and one mail command. The process's own
// bbolt ledger (event -> link) only lets a replica ack a redelivery it has
// already completed without asking JetStream.
package issuer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Log keys.
const (
	keySubject    = "subject"
	keyEventID    = "event_id"
	keyPracticeID = "practice_id"
	keyClientID   = "client_id"
	keyLinkID     = "link_id"
	keySupersedes = "supersedes"
	keyMailed     = "mail_queued"
	keySeq        = "seq"
	keyDelivered  = "delivered"
	keyOutcome    = "outcome"
	keyReason     = "reason"
	keyDelay      = "delay"
	keyErr        = "err"
	keyDeleted    = "deleted"
	keyAppt       = "appointment_id"
	keyScope      = "scope"
	keyCount      = "count"
	keyMailID     = "mail_id"
)

// Outcomes of handling one action (metric label and log value).
const (
	outcomeIssued         = "issued"           // a new link is current in its scope
	outcomeSuperseded     = "born_superseded"  // minted, but a newer action already owns the scope
	outcomeDuplicate      = "duplicate"        // already done: redelivery or re-publish
	outcomeStored         = "stored"           // practice settings written
	outcomeStale          = "stale"            // older than what is stored: practice settings, an appointment action or reminder overtaken by a newer change
	outcomeDeadLetter     = "dead_letter"      // poison: dead-lettered and terminated
	outcomeRetry          = "retry"            // transient failure: nak with backoff
	outcomeUpdated        = "updated"          // a scheduled for a live appointment: details updated, link kept
	outcomeRescheduled    = "rescheduled"      // the appointment moved
	outcomeCanceled       = "canceled"         // the appointment was canceled
	outcomeIgnoreCanceled = "ignored_canceled" // a reschedule of a canceled appointment: no change
	outcomeReminded       = "reminded"         // a reminder email queued
	outcomeSkipped        = "skipped"          // a reminder not sent: canceled, revoked or over
	outcomeRevoked        = "revoked"          // links revoked (maybe none were live)
)

// deadLetterSource is the suffix of the dead-letter subject: deadletter.actions.
const deadLetterSource = "actions"

// Defaults and limits.
const (
	defaultConcurrency = 256
	// handleTimeout bounds one message's work; it stays below the
	// consumer's AckWait (10s, bus.ConsumerConfigs) so a stuck call ends
	// before the message is redelivered.
	handleTimeout = 8 * time.Second
	// Retry backoff: 100ms doubling per delivery, at most 30s.
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// restartDelay is the pause before re-opening a consumer that failed.
	restartDelay = time.Second
	// settleQueue buffers finished messages waiting for the settler;
	// settleGroup caps one group commit.
	settleQueue = 4096
	settleGroup = 1024
)

// Config wires an Issuer.
type Config struct {
	JS jetstream.JetStream
	// DB is the process's own bbolt file, opened by the caller with
	// store.Open(dir, "issuer", Buckets()...).
	DB        *bolt.DB
	Keys      *link.Keyring
	Practices *practice.Directory
	// Clock defaults to clock.Real{}.
	Clock clock.Clock
	// Log defaults to a logger that discards.
	Log *slog.Logger
	// Metrics, if set, receives the issuer's metrics.
	Metrics prometheus.Registerer
	// Concurrency is the number of messages handled in parallel (default 256).
	Concurrency int
}

// Issuer turns actions into links, scope changes, lifecycle events and mail
// commands.
type Issuer struct {
	js          jetstream.JetStream
	keys        *link.Keyring
	practices   *practice.Directory
	clock       clock.Clock
	log         *slog.Logger
	concurrency int
	ledger      *ledger
	scopes      *scope.Store
	links       *bus.Reader
	actions     *bus.Reader
	m           *metrics
	claims      *claims
	recipients  *recipient.Book
	routes      map[string]route
}

// handlerFunc handles one decoded action. An error means a transient
// failure: the message is retried.
type handlerFunc func(ctx context.Context, d *delivery) (result, error)

// route is how one action subject is handled.
type route struct {
	handle handlerFunc
	// ledger: the action mints a link, recorded in the local ledger.
	ledger bool
	// inline: handled by the dispatcher itself, in stream order, before
	// later messages are dispatched (practice settings must be in force
	// for the actions that follow them).
	inline bool
}

// delivery is one decoded action and where it came from.
type delivery struct {
	msg       jetstream.Msg
	seq       uint64 // ACTIONS stream sequence
	delivered uint64 // delivery count, 1 the first time
	action    events.Action
	env       events.Envelope
	log       *slog.Logger
}

// poisonError marks a handler error that no retry can fix: the action is
// dead-lettered with it as the reason.
type poisonError struct{ err error }

func (p *poisonError) Error() string { return p.err.Error() }
func (p *poisonError) Unwrap() error { return p.err }

// poison wraps err so that the action is dead-lettered.
func poison(err error) error { return &poisonError{err: err} }

// Errors that dead-letter an action (wrapped with detail).
var (
	// ErrUnknownAppointment: a rescheduled, canceled or reminder action
	// names an appointment no scheduled action created (after a few
	// deliveries: its scheduled action may be handled in parallel).
	ErrUnknownAppointment = errors.New("unknown appointment")
	// ErrAppointmentClient: a scheduled action names an appointment that
	// already belongs to another client, or an appointment id is held by
	// several clients' scopes.
	ErrAppointmentClient = errors.New("appointment belongs to another client")
)

// result is what a handler did.
type result struct {
	outcome string
	linkID  string
}

// Buckets are the bbolt buckets the issuer uses.
func Buckets() []string { return []string{bucketLedger} }

// New checks cfg and returns an Issuer.
func New(cfg Config) (*Issuer, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("issuer: Config.JS is required")
	case cfg.DB == nil:
		return nil, errors.New("issuer: Config.DB is required")
	case cfg.Keys == nil:
		return nil, errors.New("issuer: Config.Keys is required")
	case cfg.Practices == nil:
		return nil, errors.New("issuer: Config.Practices is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = defaultConcurrency
	}
	lg, err := openLedger(cfg.DB)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	i := &Issuer{
		js: cfg.JS, keys: cfg.Keys, practices: cfg.Practices, clock: cfg.Clock,
		log: cfg.Log, concurrency: cfg.Concurrency, ledger: lg,
		scopes:     scope.NewStore(cfg.JS),
		links:      bus.NewReader(cfg.JS, bus.StreamLinks),
		actions:    bus.NewReader(cfg.JS, bus.StreamActions),
		m:          m,
		claims:     &claims{js: cfg.JS},
		recipients: recipient.NewBook(cfg.JS),
	}
	i.routes = map[string]route{
		events.SubjectSigninRequested:        {handle: i.claimed(i.signin), ledger: true},
		events.SubjectDocumentShared:         {handle: i.claimed(i.document), ledger: true},
		events.SubjectPracticeUpdated:        {handle: i.practiceUpdated, inline: true},
		events.SubjectAppointmentScheduled:   {handle: i.claimed(i.appointmentScheduled), ledger: true},
		events.SubjectAppointmentRescheduled: {handle: i.claimed(i.appointmentRescheduled), ledger: true},
		events.SubjectAppointmentCanceled:    {handle: i.claimed(i.appointmentCanceled), ledger: true},
		events.SubjectAppointmentReminder:    {handle: i.claimed(i.appointmentReminder), ledger: true},
		events.SubjectClientLinksRevoked:     {handle: i.claimed(i.linksRevoked), ledger: true},
		events.SubjectRenewalRequested:       {handle: i.claimed(i.renewalRequested), ledger: true},
	}
	return i, nil
}

// Run consumes the durable consumer "issuer" on ACTIONS with Concurrency
// parallel handlers until ctx ends. On the way out it stops pulling, hands
// the messages it had buffered back to the stream (nak, for another replica
// to take at once), lets the handlers finish the messages they hold, and
// returns nil. A consumer that fails is re-opened.
//
// Handlers do not wait for the ledger: a finished message goes to one
// settler goroutine that writes the ledger entries of every message
// finished meanwhile in one bbolt transaction (a group commit: one fsync
// for many messages), then acks them.
func (i *Issuer) Run(ctx context.Context) error {
	// Handlers finish the message they hold even when ctx ends: half-done
	// work would only be redone after AckWait.
	hctx := context.WithoutCancel(ctx)
	work := make(chan jetstream.Msg)
	settle := make(chan settlement, settleQueue)
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		i.settleLoop(settle)
	}()
	var wg sync.WaitGroup
	for range i.concurrency {
		wg.Go(func() {
			for msg := range work {
				i.handleBounded(hctx, msg, func(s settlement) { settle <- s })
			}
		})
	}
	lanes := make(lanes, apptLanes)
	for n := range lanes {
		lanes[n] = make(chan jetstream.Msg, laneQueue)
		wg.Go(func() {
			for msg := range lanes[n] {
				if ctx.Err() != nil {
					_ = msg.Nak() // queued, not started: give it back at once
					continue
				}
				i.handleBounded(hctx, msg, func(s settlement) { settle <- s })
			}
		})
	}
	var prune sync.WaitGroup
	prune.Go(func() { i.pruneLoop(ctx) })
	defer func() {
		close(work)
		for _, l := range lanes {
			close(l)
		}
		wg.Wait()
		close(settle)
		<-settled
		prune.Wait()
	}()

	for {
		err := i.consume(ctx, hctx, work, lanes)
		if ctx.Err() != nil {
			return nil
		}
		i.log.Warn("issuer consumer stopped; re-opening", keyErr, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(restartDelay):
		}
	}
}

// consume runs one message iterator until ctx ends or the iterator fails.
func (i *Issuer) consume(ctx, hctx context.Context, work chan<- jetstream.Msg, lanes lanes) error {
	cons, err := i.js.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		return fmt.Errorf("issuer: consumer %s: %w", bus.ConsumerIssuer, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(4*i.concurrency, 256)))
	if err != nil {
		return fmt.Errorf("issuer: messages: %w", err)
	}
	defer it.Stop()
	// Drain: no new pulls, but the messages already buffered are still
	// returned by Next, so they can be handed back below.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return err
			}
			i.log.Warn("issuer consumer hiccup", keyErr, err)
			continue
		}
		if ctx.Err() != nil {
			_ = msg.Nak() // shutting down: give it back at once
			continue
		}
		if r, ok := i.routes[msg.Subject()]; ok && r.inline {
			i.handleBounded(hctx, msg, i.settleNow)
			continue
		}
		if lane := lanes.of(msg); lane != nil {
			lane <- msg
			continue
		}
		work <- msg
	}
}

func (i *Issuer) handleBounded(ctx context.Context, msg jetstream.Msg, settle func(settlement)) {
	ctx, cancel := context.WithTimeout(ctx, handleTimeout)
	defer cancel()
	_ = i.process(ctx, msg, settle) // process settles the message and logs; nothing more to do
}

// Handle handles one message of ACTIONS and settles it before returning:
// ledger entry then ack when done (or already done), dead letter then term
// for poison, nak with backoff for a transient failure. It returns an
// error only in the last case (the message will be redelivered) or when
// msg is not a JetStream message.
func (i *Issuer) Handle(ctx context.Context, msg jetstream.Msg) error {
	return i.process(ctx, msg, i.settleNow)
}

// process handles msg and passes a finished one to settle.
func (i *Issuer) process(ctx context.Context, msg jetstream.Msg, settle func(settlement)) error {
	start := time.Now()
	outcome, s, err := i.handle(ctx, msg)
	if s.msg != nil {
		settle(s)
	}
	i.m.observe(msg.Subject(), outcome, time.Since(start))
	return err
}

// handle does a message's work. A finished message is returned as a
// settlement for the caller to record and ack; poison and failures are
// settled here (term, nak).
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
		outcome, err := i.poison(ctx, msg, md, log, err)
		return outcome, settlement{}, err
	}
	env := events.EnvelopeOf(a)
	log = log.With(keyEventID, env.EventID, keyPracticeID, env.PracticeID)
	d := &delivery{msg: msg, seq: md.Sequence.Stream, delivered: md.NumDelivered, action: a, env: env, log: log}
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
	var pe *poisonError
	if errors.As(err, &pe) {
		outcome, err := i.poison(ctx, msg, md, log, pe.err)
		return outcome, settlement{}, err
	}
	if err != nil {
		outcome, err := i.retry(msg, md, log, err)
		return outcome, settlement{}, err
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

// poison dead-letters an action that can never be handled, with the reason,
// and terminates it so it never blocks the queue.
func (i *Issuer) poison(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, log *slog.Logger, reason error) (string, error) {
	if err := bus.DeadLetter(ctx, i.js, deadLetterSource, msg, reason); err != nil {
		return i.retry(msg, md, log, err)
	}
	if err := msg.Term(); err != nil {
		log.Warn("issuer term failed", keyErr, err)
	}
	i.m.deadLetter(msg.Subject())
	log.Warn("action dead-lettered", keyReason, reason.Error(), keyDelivered, md.NumDelivered)
	return outcomeDeadLetter, nil
}

// retry hands a message back with a delay growing with its deliveries.
func (i *Issuer) retry(msg jetstream.Msg, md *jetstream.MsgMetadata, log *slog.Logger, cause error) (string, error) {
	delay := backoff(md.NumDelivered)
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("issuer nak failed", keyErr, err)
	}
	log.Warn("action failed; will retry", keyErr, cause, keyDelivered, md.NumDelivered, keyDelay, delay)
	return outcomeRetry, fmt.Errorf("issuer: %s seq %d (delivery %d, retry in %s): %w",
		msg.Subject(), md.Sequence.Stream, md.NumDelivered, delay, cause)
}

// backoff is 100ms for the first delivery, doubling up to 30s.
func backoff(numDelivered uint64) time.Duration {
	d := backoffMin
	for n := uint64(1); n < numDelivered && d < backoffMax; n++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// practiceUpdated stores a practice's settings unless newer ones are stored.
func (i *Issuer) practiceUpdated(ctx context.Context, d *delivery) (result, error) {
	u := d.action.(*events.PracticeUpdated)
	wrote, err := i.practices.PutIfNewer(ctx, u, d.seq)
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	if !wrote {
		d.log.Info("practice settings not stored: newer ones already are")
		return result{outcome: outcomeStale}, nil
	}
	d.log.Info("practice settings stored")
	return result{outcome: outcomeStored}, nil
}
