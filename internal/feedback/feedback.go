// Package feedback owns what SES reports about the emails linkpipe sent:
// the SQS consumer of the queue an SES configuration set's event
// destination feeds through SNS (LINKPIPE_SES_EVENTS_QUEUE_URL), run by
// every mailer replica. Each queue message is an SNS notification whose
// Message is an SES event, or with raw message delivery the SES event
// itself, in either the event-publishing form (eventType) or the
// identity-notification form (notificationType). An event is matched to
// the email by mail.messageId (package sentmail) or, failing that, by the
// linkpipe_mail tag (the email's mail.done record), and becomes:
//
//   - Delivery: links.<id>.delivered (<id> the link's id, or for an
//     email without a link its mail id, as for its sent event);
//   - Bounce: links.<id>.bounced (reason permanent, transient or
//     undetermined; detail the bounce subtype and diagnostic); a permanent
//     bounce also suppresses the address (package suppress);
//   - Complaint: links.<id>.complained, and the address is suppressed.
//
// Delivery is at least once: a queue message is deleted only after its
// effect is stored (the suppression written, the lifecycle event
// published with a Nats-Msg-Id derived from the event, so a redelivery
// changes nothing). A message that cannot be used — malformed, of a kind
// linkpipe does not use, or matching no email (after a few receives, in
// case the email's record is being written) — is copied to
// deadletter.feedback with the reason in Linkpipe-Reason, then deleted:
// it never crashes the consumer nor blocks the queue. A failure to store
// an effect (NATS unreachable) leaves the message on the queue, visible
// again after RetryDelay. Events of types that say nothing linkpipe
// records (Send, Open, Click, DeliveryDelay, Subscription) are deleted and
// counted. Addresses never reach a log line, an event or a dead-letter
// reason: events carry ids, suppressions a hash.
package feedback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// Queue is the part of the SQS client the consumer uses (*sqs.Client).
type Queue interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// ErrNoRegion: neither AWS_REGION nor the shared config names a region.
var ErrNoRegion = errors.New("feedback: no AWS region (set AWS_REGION)")

// NewClient loads the SDK's default configuration (AWS_REGION,
// AWS_ENDPOINT_URL_SQS, credentials, ...) and returns an SQS client; opts
// apply after it.
func NewClient(ctx context.Context, opts ...func(*sqs.Options)) (*sqs.Client, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("feedback: aws config: %w", err)
	}
	c := sqs.NewFromConfig(cfg, opts...)
	if c.Options().Region == "" {
		return nil, ErrNoRegion
	}
	return c, nil
}

// DeadLetterSource is the suffix of the dead-letter subject:
// deadletter.feedback.
const DeadLetterSource = "feedback"

// HeaderSourceQueue names, on a dead letter, the SQS queue the message
// came from (its SQS message id is in bus.HeaderSourceMsgID).
const HeaderSourceQueue = "Linkpipe-Source-Queue"

// Config configures a Consumer. JS, Queue and QueueURL are required.
type Config struct {
	JS       jetstream.JetStream
	Queue    Queue
	QueueURL string
	Clock    clock.Clock
	Log      *slog.Logger
	// Metrics registers linkpipe_feedback_* (nil: not exported).
	Metrics prometheus.Registerer
	// WaitTime is the long poll of one ReceiveMessage (default 20s, the
	// most SQS allows).
	WaitTime time.Duration
	// RetryDelay is how long a message whose effect could not be stored
	// (or that matches no email yet) stays invisible before it is
	// received again (default 30s; whole seconds).
	RetryDelay time.Duration
	// UnmatchedReceives is how many receives an event matching no email
	// gets before it is dead-lettered (default 3).
	UnmatchedReceives int
}

// Consumer polls the queue. Any number of them (one per mailer replica)
// may poll one queue.
type Consumer struct {
	cfg          Config
	messages     *sentmail.Book
	suppressions *suppress.List
	mailR        *bus.Reader
	linksR       *bus.Reader
	log          *slog.Logger
	events       *prometheus.CounterVec
}

// Outcomes of one queue message (metric label).
const (
	outcomeApplied    = "applied"
	outcomeIgnored    = "ignored"
	outcomeDeadLetter = "dead_letter"
	outcomeRetry      = "retry"
)

// Log keys.
const (
	keyMessageID = "message_id"
	keyQueueMsg  = "sqs_message_id"
	keyKind      = "kind"
	keyMailID    = "mail_id"
	keyLinkID    = "link_id"
	keyReason    = "reason"
	keyErr       = "err"
)

// New checks cfg and returns a Consumer; Run polls.
func New(cfg Config) (*Consumer, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("feedback: JS is required")
	case cfg.Queue == nil:
		return nil, errors.New("feedback: Queue is required")
	case cfg.QueueURL == "":
		return nil, errors.New("feedback: QueueURL is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.WaitTime <= 0 || cfg.WaitTime > 20*time.Second {
		cfg.WaitTime = 20 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 30 * time.Second
	}
	if cfg.UnmatchedReceives <= 0 {
		cfg.UnmatchedReceives = 3
	}
	c := &Consumer{
		cfg: cfg, messages: sentmail.NewBook(cfg.JS), suppressions: suppress.NewList(cfg.JS),
		mailR: bus.NewReader(cfg.JS, bus.StreamMail), linksR: bus.NewReader(cfg.JS, bus.StreamLinks), log: cfg.Log,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_feedback_messages_total",
			Help: "SES feedback queue messages by event kind and outcome (applied, ignored, dead_letter, retry)."},
			[]string{"kind", "outcome"}),
	}
	if err := bus.Register(cfg.Metrics, &c.events); err != nil {
		return nil, fmt.Errorf("feedback: metrics: %w", err)
	}
	return c, nil
}

// Run polls the queue until ctx ends, then returns nil. A message being
// handled when ctx ends is finished (its effect stored, then deleted).
// Errors of SQS are logged and retried with a growing pause.
func (c *Consumer) Run(ctx context.Context) error {
	pause := time.Second
	for ctx.Err() == nil {
		out, err := c.cfg.Queue.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(c.cfg.QueueURL), MaxNumberOfMessages: 10,
			WaitTimeSeconds:             int32(c.cfg.WaitTime / time.Second),
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.log.Warn("feedback: receiving from the SES events queue failed", keyErr, err)
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			pause = min(pause*2, 30*time.Second)
			continue
		}
		pause = time.Second
		for _, m := range out.Messages {
			// Finished even when ctx ends: its effect and its delete.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			c.handle(hctx, m)
			cancel()
		}
	}
	return nil
}

// handle applies one queue message and deletes it, dead-letters and
// deletes it, or leaves it for a later receive: Run's step.
func (c *Consumer) handle(ctx context.Context, m types.Message) {
	id := aws.ToString(m.MessageId)
	log := c.log.With(keyQueueMsg, id)
	kind, err := c.apply(ctx, m, log)
	outcome := outcomeApplied
	var retry *retryError
	switch {
	case errors.As(err, &retry):
		outcome = outcomeRetry
		log.Warn("feedback: event not applied yet; it will be received again", keyKind, kind, keyErr, err)
		if _, verr := c.cfg.Queue.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(c.cfg.QueueURL), ReceiptHandle: m.ReceiptHandle,
			VisibilityTimeout: int32(c.cfg.RetryDelay / time.Second)}); verr != nil {
			log.Warn("feedback: cannot delay the message; it returns after the queue's visibility timeout", keyErr, verr)
		}
		c.events.WithLabelValues(kind, outcome).Inc()
		return
	case errors.Is(err, errIgnored):
		outcome = outcomeIgnored
		log.Debug("feedback: event of a kind linkpipe does not record", keyKind, kind)
	case err != nil:
		outcome = outcomeDeadLetter
		if derr := c.deadLetter(ctx, m, err); derr != nil {
			log.Warn("feedback: dead-lettering failed; the message will be received again", keyErr, derr)
			c.events.WithLabelValues(kind, outcomeRetry).Inc()
			return
		}
		log.Warn("feedback: event dead-lettered", keyKind, kind, keyReason, err.Error())
	}
	if _, err := c.cfg.Queue.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl: aws.String(c.cfg.QueueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
		// Received again later: applying it again changes nothing.
		log.Warn("feedback: deleting a handled message failed", keyErr, err)
	}
	c.events.WithLabelValues(kind, outcome).Inc()
}

// errIgnored: an event of a kind linkpipe does not record.
var errIgnored = errors.New("feedback: ignored event")

// retryError: the effect could not be stored (or the email's record is
// not there yet); the message stays on the queue.
type retryError struct{ err error }

func (r *retryError) Error() string { return r.err.Error() }
func (r *retryError) Unwrap() error { return r.err }

func retry(err error) error { return &retryError{err: err} }

// apply stores the effect of one message. Its error is a *retryError
// (leave the message), errIgnored, or a reason to dead-letter it.
func (c *Consumer) apply(ctx context.Context, m types.Message, log *slog.Logger) (string, error) {
	e, err := parse([]byte(aws.ToString(m.Body)))
	if err != nil {
		return "unknown", err
	}
	kind := e.kind()
	if ignored[kind] {
		return kind, errIgnored
	}
	rec, err := c.match(ctx, e)
	if errors.Is(err, ErrUnmatched) {
		if receives(m) < c.cfg.UnmatchedReceives {
			return kind, retry(err) // the mailer may be writing the record now
		}
		return kind, err
	}
	if err != nil {
		return kind, retry(err)
	}
	log = log.With(keyKind, kind, keyMailID, rec.MailID, keyLinkID, rec.LinkID, keyMessageID, rec.MessageID)
	// An email without a link reports under its mail id, as the mailer
	// does for its sent and failed events.
	linkID := rec.LinkID
	if linkID == "" {
		linkID = rec.MailID
	}
	ev := &events.LinkEvent{LinkID: linkID, PracticeID: rec.PracticeID, ClientID: rec.ClientID, Purpose: rec.Purpose,
		MailID: rec.MailID, MailKind: rec.Kind, MessageID: rec.MessageID}
	var sup *suppress.Entry
	switch kind {
	case kindDelivery:
		var at time.Time
		if e.Delivery != nil {
			at = e.Delivery.Timestamp
		}
		ev.Type, ev.EventID, ev.At = events.TypeDelivered, "delivered-"+rec.MailID, c.at(at)
	case kindBounce:
		b := e.Bounce
		ev.Type, ev.Reason, ev.Detail, ev.At = events.TypeBounced, bounceReason(b.BounceType), e.bounceDetail(), c.at(b.Timestamp)
		ev.EventID = "bounced-" + rec.MailID + "-" + feedbackKey(b.FeedbackID, ev.At)
		if ev.Reason == events.BouncePermanent {
			sup = &suppress.Entry{Cause: suppress.CauseBounce, Detail: ev.Detail, At: ev.At}
		}
	case kindComplaint:
		cp := e.Complaint
		ev.Type, ev.Detail, ev.At = events.TypeComplained, detail(cp.ComplaintFeedbackType), c.at(cp.Timestamp)
		ev.EventID = "complained-" + rec.MailID + "-" + feedbackKey(cp.FeedbackID, ev.At)
		sup = &suppress.Entry{Cause: suppress.CauseComplaint, Detail: ev.Detail, At: ev.At}
	}
	// Only the address the email was sent to is suppressed, by the hash
	// linkpipe recorded when it sent it, never an address the event names:
	// whoever can write to the queue could list anyone there.
	if sup != nil && rec.AddressHash == "" {
		log.Warn("feedback: no address on record for this email; nothing suppressed", keyReason, sup.Cause)
	} else if sup != nil {
		sup.MessageID, sup.MailID, sup.LinkID, sup.PracticeID = rec.MessageID, rec.MailID, rec.LinkID, rec.PracticeID
		// The same event received again after an operator lifted the
		// suppression it caused (SQS delivers at least once) must not
		// suppress the address again; a new bounce or complaint does.
		cur, ok, err := c.suppressions.Lookup(ctx, rec.AddressHash)
		if err != nil {
			return kind, retry(err)
		}
		if !ok || cur.Active() || cur.MessageID != sup.MessageID || cur.Cause != sup.Cause {
			if err := c.suppressions.Suppress(ctx, rec.AddressHash, sup); err != nil {
				return kind, retry(err)
			}
			log.Debug("feedback: address suppressed", keyReason, sup.Cause)
		}
	}
	if !events.ValidID(ev.LinkID) {
		log.Debug("feedback: no id to publish the lifecycle event under")
		return kind, nil
	}
	if err := c.publishOnce(ctx, ev); err != nil {
		return kind, retry(err)
	}
	log.Debug("feedback: lifecycle event published", "type", ev.Type)
	return kind, nil
}

// at is the event's own time when it has one, else now.
func (c *Consumer) at(t time.Time) time.Time {
	if t.IsZero() {
		return c.cfg.Clock.Now().UTC()
	}
	return t.UTC()
}

// feedbackKey names one bounce or complaint in an event id: SES's
// feedbackId when it is an id, else the event's time.
func feedbackKey(id string, at time.Time) string {
	if id != "" && len(id) <= 100 && validIDChars(id) {
		return id
	}
	return strconv.FormatInt(at.UnixMilli(), 10)
}

func validIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// match finds the email an event is about: its record by message id, else
// the mail.done record named by its linkpipe_mail tag.
func (c *Consumer) match(ctx context.Context, e *sesEvent) (*sentmail.Record, error) {
	rec, err := c.messages.Get(ctx, e.Mail.MessageID)
	if err == nil {
		return rec, nil
	}
	if !errors.Is(err, sentmail.ErrNotFound) {
		return nil, err
	}
	tag := e.mailTag()
	if tag == "" {
		return nil, fmt.Errorf("%w: message id %q", ErrUnmatched, clip(e.Mail.MessageID))
	}
	var d mailer.Done
	if _, err := c.mailR.LastJSON(ctx, bus.MailDonePrefix+tag, &d); errors.Is(err, bus.ErrNotFound) {
		return nil, fmt.Errorf("%w: message id %q, mail %s", ErrUnmatched, clip(e.Mail.MessageID), tag)
	} else if err != nil {
		return nil, err
	}
	if d.Status != mailer.StatusSent {
		return nil, fmt.Errorf("%w: mail %s was not sent", ErrUnmatched, tag)
	}
	// The tag is only a hint: an event is about the email only if SES gave
	// that email the event's message id (a forged event names a real mail
	// id easily: every recipient sees theirs in the email's headers).
	if d.MessageID != "" && d.MessageID != e.Mail.MessageID {
		return nil, fmt.Errorf("%w: message id %q is not the one mail %s was sent with", ErrUnmatched, clip(e.Mail.MessageID), tag)
	}
	return &sentmail.Record{MessageID: e.Mail.MessageID, MailID: d.MailID, Kind: d.Kind, LinkID: d.LinkID,
		PracticeID: d.PracticeID, ClientID: d.ClientID, Purpose: d.Purpose, AddressHash: d.AddressHash}, nil
}

// publishOnce publishes ev unless the link's last event of its type is
// this one (a redelivery after the dedupe window).
func (c *Consumer) publishOnce(ctx context.Context, ev *events.LinkEvent) error {
	var last events.LinkEvent
	if _, err := c.linksR.LastJSON(ctx, ev.Subject(), &last); err == nil && last.EventID == ev.EventID {
		return nil
	} else if err != nil && !errors.Is(err, bus.ErrNotFound) {
		return err
	}
	return bus.PublishEvent(ctx, c.cfg.JS, ev)
}

// receives is the message's ApproximateReceiveCount (1 when absent).
func receives(m types.Message) int {
	n, err := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// deadLetter copies the message to deadletter.feedback with the reason,
// once per queue message id (Nats-Msg-Id).
func (c *Consumer) deadLetter(ctx context.Context, m types.Message, reason error) error {
	hdr := nats.Header{}
	// No Linkpipe-Source-Subject: the message came from no NATS subject,
	// so there is nothing to replay it to.
	hdr.Set(HeaderSourceQueue, c.cfg.QueueURL)
	hdr.Set(bus.HeaderSourceMsgID, aws.ToString(m.MessageId))
	return bus.PublishDeadLetter(ctx, c.cfg.JS, DeadLetterSource, "dl-feedback-"+aws.ToString(m.MessageId),
		[]byte(aws.ToString(m.Body)), reason, hdr)
}
