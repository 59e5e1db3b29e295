// Package bus owns linkpipe's use of NATS JetStream: the streams, consumers
// and key-value buckets every worker relies on (created or updated by
// `linkpipe setup`; a worker creates what is missing and reports what
// differs, Ensure), connecting with NATS's authentication and TLS options
// (ConnectOptions) and never showing a password (Redact), publishing
// (Publish, which reads JetStream's acknowledgement without encoding/json)
// and publishing once (Nats-Msg-Id) for lifecycle events and mail
// commands, last-message reads (from any
// replica, or from the stream's leader), dead letters, the consume loop
// every worker runs on (Loop, consume.go), the one metrics registration
// policy (Register), and an embedded nats-server for the all-in-one dev
// mode and for tests. Conditional writes of scope states are package
// scope's.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
)

// Stream, consumer and bucket names. ACTIONS and LINKS are the public
// contract; the others are linkpipe's own.
const (
	StreamActions    = events.StreamActions
	StreamLinks      = events.StreamLinks
	StreamScopes     = "SCOPES"
	StreamMail       = "MAIL"
	StreamDeadLetter = "DEADLETTER"
	StreamRenewals   = "RENEWALS"

	ConsumerIssuer    = "issuer"
	ConsumerMailer    = "mailer"
	ConsumerProjector = "projector"

	BucketPractices = "linkpipe_practices"
	// BucketEventClaims binds each event id (per practice) to the action
	// that first used it: the issuer's claims, see issuer.claim.
	BucketEventClaims = "linkpipe_event_claims"
	// BucketRecipients holds the address on record of each link (package
	// recipient).
	BucketRecipients = "linkpipe_recipients"
	// BucketMessages maps a mail provider's message id to the email it
	// names, for delivery feedback (package sentmail); records expire
	// after MessagesTTL.
	BucketMessages = "linkpipe_messages"
	// BucketSuppressed is the suppression list, keyed by a hash of the
	// address (package suppress).
	BucketSuppressed = "linkpipe_suppressed"
)

// MessagesTTL is how long a sent email can be matched to SES's feedback
// about it (bounces arrive within minutes, complaints within days).
const MessagesTTL = 30 * 24 * time.Hour

// Subjects of linkpipe's own streams.
const (
	// ScopeSubjects is the SCOPES stream's subject filter; package scope
	// owns the subjects under it (scope.All is the same filter).
	ScopeSubjects = "scope.>"
	// MailCommandPrefix + mail id carries a mail command; the MAIL stream
	// keeps at most one message per subject and refuses a second, so a mail
	// id can be queued once, however often its action is replayed.
	MailCommandPrefix = "mail.cmd."
	// MailDonePrefix + mail id marks a mail as handed to the mail provider.
	MailDonePrefix = "mail.done."
	// MailSendingPrefix + mail id + "." + delivery count is the mailer's
	// claim on one delivery of a mail command, published just before it
	// sends: only one copy of a delivery can publish it (see package
	// mailer, "After a NATS outage").
	MailSendingPrefix = "mail.sending."
	// DeadLetterPrefix + source ("actions", "mail", "feedback") carries
	// poison messages.
	DeadLetterPrefix = "deadletter."
	// ReminderSchedulePrefix is where reminder schedules live in ACTIONS:
	// actions.schedule.reminder.<practice>.<appointment>.<offset>.
	ReminderSchedulePrefix = "actions.schedule.reminder."
	// RenewalPrefix + practice.client counts renewals (rate limit).
	RenewalPrefix = "renewal."
)

// Headers linkpipe sets.
const (
	HeaderReason        = "Linkpipe-Reason"
	HeaderSource        = "Linkpipe-Source-Subject"
	HeaderSourceSeq     = "Linkpipe-Source-Seq"
	HeaderSourceMsgID   = "Linkpipe-Source-Msg-Id"
	HeaderOriginalBytes = "Linkpipe-Original-Bytes"
)

// ActionSubjects are the subjects the issuer consumes (schedules excluded).
var ActionSubjects = []string{
	events.SubjectSigninRequested,
	events.SubjectDocumentShared,
	events.SubjectAppointmentScheduled,
	events.SubjectAppointmentRescheduled,
	events.SubjectAppointmentCanceled,
	events.SubjectAppointmentReminder,
	events.SubjectClientLinksRevoked,
	events.SubjectPracticeUpdated,
	events.SubjectRenewalRequested,
	events.SubjectAddressUnsuppressed,
}

// Sentinel errors.
var (
	// ErrNotFound: the subject has no message.
	ErrNotFound = errors.New("bus: no message on subject")
	// ErrDuplicate: the stream refused a second message on a subject that
	// keeps one (a mail id queued twice).
	ErrDuplicate = errors.New("bus: subject already holds its message")
)

// Options shape the streams. The zero value suits one server.
type Options struct {
	// Replicas of every stream; 3 on a production cluster. 0 means 1.
	Replicas int
	// Duplicates is the JetStream de-duplication window (default 10m).
	Duplicates time.Duration
	// RenewalWindow and RenewalLimit set the per-client renewal rate limit
	// (default 5 per 15m).
	RenewalWindow time.Duration
	RenewalLimit  int64
}

func (o Options) withDefaults() Options {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 10 * time.Minute
	}
	if o.RenewalWindow <= 0 {
		o.RenewalWindow = 15 * time.Minute
	}
	if o.RenewalLimit <= 0 {
		o.RenewalLimit = 5
	}
	return o
}

// StreamConfigs returns the configuration of every stream.
//
// Retention is chosen per job: ACTIONS keeps a week of input for replay;
// LINKS and SCOPES keep everything (limits retention, no max age, no purge,
// no delete) because a scope's state must outlive its links: "no message on
// the subject" would read as "never issued". MAIL keeps one message per
// subject for two weeks, which turns the mail id into a permanent dedupe key.
func StreamConfigs(o Options) []jetstream.StreamConfig {
	o = o.withDefaults()
	return []jetstream.StreamConfig{
		{
			Name: StreamActions, Subjects: []string{events.SubjectActionsAll},
			Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour,
			Duplicates: o.Duplicates, Replicas: o.Replicas, AllowDirect: true,
			MaxMsgSize: 1 << 20,
			// Reminder schedules (actions.schedule.reminder.>) live here.
			// A schedule replaces the previous one on its subject (a
			// rollup, so AllowRollup) and carries Nats-TTL "never"
			// (AllowMsgTTL) so that MaxAge cannot drop a schedule that
			// fires more than a week after it was planned.
			AllowMsgSchedules: true, AllowRollup: true, AllowMsgTTL: true,
		},
		{
			Name: StreamLinks, Subjects: []string{events.SubjectLinksAll},
			Retention: jetstream.LimitsPolicy, Duplicates: o.Duplicates,
			Replicas: o.Replicas, AllowDirect: true, DenyDelete: true, DenyPurge: true,
		},
		{
			Name: StreamScopes, Subjects: []string{ScopeSubjects},
			Retention: jetstream.LimitsPolicy, MaxMsgsPerSubject: 100,
			Duplicates: o.Duplicates, Replicas: o.Replicas, AllowDirect: true,
			DenyDelete: true, DenyPurge: true,
		},
		{
			Name: StreamMail, Subjects: []string{"mail.>"},
			Retention: jetstream.LimitsPolicy, MaxAge: 14 * 24 * time.Hour,
			MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			Duplicates: o.Duplicates, Replicas: o.Replicas, AllowDirect: true,
		},
		{
			Name: StreamDeadLetter, Subjects: []string{DeadLetterPrefix + ">"},
			Retention: jetstream.LimitsPolicy, MaxAge: 30 * 24 * time.Hour,
			Replicas: o.Replicas, AllowDirect: true,
		},
		{
			Name: StreamRenewals, Subjects: []string{RenewalPrefix + ">"},
			Retention: jetstream.LimitsPolicy, MaxAge: o.RenewalWindow,
			MaxMsgsPerSubject: o.RenewalLimit, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			Replicas: o.Replicas, AllowDirect: true,
		},
	}
}

// ConsumerConfigs returns the durable consumers, keyed by stream.
func ConsumerConfigs() map[string]jetstream.ConsumerConfig {
	return map[string]jetstream.ConsumerConfig{
		StreamActions: {
			Durable: ConsumerIssuer, FilterSubjects: ActionSubjects,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second,
			MaxAckPending: 4096, DeliverPolicy: jetstream.DeliverAllPolicy,
		},
		StreamMail: {
			Durable: ConsumerMailer, FilterSubject: MailCommandPrefix + ">",
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 15 * time.Second,
			MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverAllPolicy,
		},
		StreamScopes: {
			Durable: ConsumerProjector, FilterSubject: ScopeSubjects,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			MaxAckPending: 4096, DeliverPolicy: jetstream.DeliverAllPolicy,
		},
	}
}

// Setup creates or updates every stream, consumer and bucket: what
// `linkpipe setup` runs with admin rights. It is safe to call
// concurrently. Workers do not call it; they run Ensure, which never
// changes an existing stream.
func Setup(ctx context.Context, js jetstream.JetStream, o Options) error {
	o = o.withDefaults()
	cons := ConsumerConfigs()
	for _, cfg := range StreamConfigs(o) {
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
		if cc, ok := cons[cfg.Name]; ok {
			cc.Replicas = 0 // inherit the stream's
			if _, err := s.CreateOrUpdateConsumer(ctx, cc); err != nil {
				return fmt.Errorf("bus: consumer %s on %s: %w", cc.Durable, cfg.Name, err)
			}
		}
	}
	for _, b := range BucketConfigs(o) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, b); err != nil {
			return fmt.Errorf("bus: bucket %s: %w", b.Bucket, err)
		}
	}
	return nil
}

// isPerSubjectFull reports the DiscardNewPerSubject refusal
// (JSStreamStoreFailedF "maximum messages per subject exceeded", 10077).
func isPerSubjectFull(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == 10077
	}
	return false
}

// PublishOnce publishes data to subj with a Nats-Msg-Id (dedupe within the
// window). A message the stream refuses because its subject already holds
// one is reported as ErrDuplicate.
func PublishOnce(ctx context.Context, js jetstream.JetStream, subj, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: subj, Data: data, Header: hdr}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	ack, err := Publish(ctx, js, msg)
	if err != nil {
		if isPerSubjectFull(err) {
			return nil, fmt.Errorf("%w: %s", ErrDuplicate, subj)
		}
		return nil, fmt.Errorf("bus: publish %s: %w", subj, err)
	}
	return ack, nil
}

// SetupWhenReady runs Setup, retrying every second while NATS is not
// reachable yet, until ctx ends. Each failed attempt is logged at warn
// level.
func SetupWhenReady(ctx context.Context, js jetstream.JetStream, o Options, log *slog.Logger) error {
	return whenReady(ctx, log, func(ctx context.Context) error { return Setup(ctx, js, o) })
}
