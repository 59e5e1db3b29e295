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
	"github.com/linkpipe/linkpipe/internal/suppress"
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
	outcomeBornRevoked    = "born_revoked"     // minted, but a newer revocation was handled first
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
	// Retry backoff: 100ms doubling per delivery, at most 30s (with
	// bus.DefaultJitter).
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
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
	claims      *bus.Bucket
	recipients  *recipient.Book
	routes      map[string]route
	// suppressions is the suppression list (suppressions.go).
	suppressions *suppress.List
	// direct is the consume loop's settlement for Handle (consume.go).
	direct *bus.Loop
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
	seq       uint64    // ACTIONS stream sequence
	at        time.Time // when the action reached ACTIONS
	delivered uint64    // delivery count, 1 the first time
	action    events.Action
	env       events.Envelope
	log       *slog.Logger
}

// poison marks a handler error that no retry can fix: the action is
// dead-lettered with err as the reason (bus.Poison).
func poison(err error) error { return bus.Poison(err) }

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
		claims:     bus.NewBucket(cfg.JS, bus.BucketEventClaims),
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
		events.SubjectAddressUnsuppressed:    {handle: i.addressUnsuppressed},
	}
	i.suppressions = suppress.NewList(cfg.JS)
	if i.direct, err = i.newLoop(i.settleNow); err != nil {
		return nil, err
	}
	return i, nil
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
