// Package mailer owns sending the emails linkpipe queues: the durable
// consumer "mailer" on the MAIL stream (shared by every replica), which
// turns each mail.cmd.<mail_id> into one email — re-deriving the link's
// token from the key, rendering it, handing it to a Sender (Amazon SES, or
// the local Sink) — and records the outcome: mail.done.<mail_id> on MAIL and
// links.<link_id>.sent or .failed on LINKS. It also owns the Sink, the dev
// mode's local inbox.
//
// # At most one email per mail id
//
// A mail id is queued once (MAIL keeps one message per subject). Before
// sending, the mailer looks for mail.done.<mail_id>; after a successful send
// it publishes mail.done.<mail_id> before anything else, then the lifecycle
// event, then acks. A redelivery (another replica, a restart, an ack lost)
// therefore finds the done marker and only makes sure the lifecycle event
// exists. The one window left is a crash between the provider accepting the
// email and the done marker being stored: that email is sent again. That
// window is every request on the wire to the provider, not only the instant
// between its answer and mail.done: a provider completes a request whose
// sender died (SES, and aws-ses-v2-local, store it as soon as it arrives),
// so a mailer killed with k sends in flight sends up to k emails twice
// (docs/performance.md, "Duplicates on a crash"). While a send is slow the
// mailer tells JetStream it is still working on the message (InProgress),
// so no other replica picks it up meanwhile.
//
// # After a NATS outage
//
// A nats-server killed without a clean shutdown forgets the deliveries and
// acks of its consumers' last moments (it writes consumer state at most
// every 100ms), so once it is back it delivers again, with the same
// delivery count, commands that a mailer still holds: buffered, or being
// sent, their mail.done still on its way. Before sending, a mailer
// therefore claims the delivery: mail.sending.<mail_id>.<delivery>, which
// MAIL, keeping one message per subject, lets only one copy publish. A
// copy that finds the delivery claimed sends nothing and comes back after
// ClaimWait, by when the claimant has stored mail.done. A later delivery
// (a retry, AckWait after a crash) has its own claim.
//
// # Failures
//
// Sender errors wrapping mail.ErrPermanent (the provider refused this one
// email) end the email. Every other error is retried: the message goes
// back to the queue with NakWithDelay, the delay doubling from RetryMin to
// RetryMax by delivery count; the first failure, unless it is throttling,
// also publishes links.<id>.failed with permanent=false so practice
// systems can see a delay. mail.ErrRefused (the provider refuses every send
// until an operator acts: sending paused, account suspended, ...) is
// retried like any transient failure, and after RefusalsNotReady of them
// in a row Ready reports the mailer not ready. Retries end: a send that
// fails on delivery MaxAttempts (LINKPIPE_MAIL_MAX_ATTEMPTS), or a command
// delivered more often, ends the email too, as does a link that expired
// before its email could be sent (the link would not work). An email that
// ends unsent is copied to deadletter.mail with the reason (`linkpipe
// deadletter replay` re-drives it), then gets mail.done with status
// "failed" and links.<id>.failed with permanent=true, and is acked. Every
// email therefore ends sent or failed for good, with a lifecycle event
// either way: an email without a link (an in-person appointment's
// confirmation, reminder, ...) reports under its mail id,
// links.<mail_id>.sent or .failed. A command that cannot be decoded is
// copied to deadletter.mail and terminated. A provider's error text is
// scrubbed of addresses and tokens (mail.Scrub) before it becomes a
// reason, a log line or an error: lifecycle events and logs name clients
// by id only. The
// consume loop (concurrency, keep-alive, retries, dead letters, shutdown) is
// bus.Loop's.
//
// # Pacing
//
// With a Pacer (package pace) every call to the Sender waits its turn, so
// that all replicas together stay within the provider's sending rate; a
// throttling answer tells the Pacer to slow down. An email still waiting
// for its turn when Run's ctx ends is not sent but handed back.
package mailer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// Sender hands one email to a mail provider and returns the provider's
// message id. Errors wrap mail.ErrPermanent (do not retry) or
// mail.ErrTransient / mail.ErrThrottled (retry later); anything else is
// treated as transient.
type Sender interface {
	Send(ctx context.Context, m *mail.Message) (string, error)
}

// Pacer paces the calls to the Sender so that every replica together
// stays within the provider's sending rate (package pace): Wait before
// each call, Throttled after each throttling answer.
type Pacer interface {
	Wait(ctx context.Context) error
	Throttled()
}

// Config configures a Mailer. JS, Keys, Practices, Sender, From and
// PublicURL are required.
type Config struct {
	JS        jetstream.JetStream
	Keys      *link.Keyring
	Practices *practice.Directory
	Sender    Sender
	// From is the From address of every email.
	From string
	// PublicURL is the redeemer's base URL; links are PublicURL/l/<token>.
	PublicURL string
	Clock     clock.Clock
	Log       *slog.Logger
	// Metrics registers linkpipe_mailer_* (nil: not exported).
	Metrics prometheus.Registerer
	// Concurrency is the number of emails in flight at once (default 8;
	// cmd/mailer sizes it from the sending rate, or SinkConcurrency).
	Concurrency int
	// Pacer paces the sends (nil: unpaced).
	Pacer Pacer
	// RetryMin and RetryMax bound the delay before a transient failure is
	// retried: RetryMin doubles with each delivery up to RetryMax (default
	// 1s and 5m), with ±20% jitter.
	RetryMin, RetryMax time.Duration
	// SendTimeout bounds one call to the Sender (default 30s).
	SendTimeout time.Duration
	// MaxAttempts is the attempt budget of one email (default 20,
	// LINKPIPE_MAIL_MAX_ATTEMPTS): a send that fails on delivery
	// MaxAttempts, or a command delivered more often, fails permanently.
	MaxAttempts int
}

// doneTimeout bounds one try of publishing a done marker or its event, so
// a publish lost with a NATS server that died is tried again soon after
// the server is back (JetStream's own default waits 5s).
const doneTimeout = 2 * time.Second

// Mailer is the MAIL consumer.
type Mailer struct {
	cfg   Config
	mailR *bus.Reader
	// recipients is the address on record of each link.
	recipients *recipient.Book
	linksR     *bus.Reader
	log        *slog.Logger
	metrics    metrics
	loop       *bus.Loop
	// waits ends when Run's ctx does: an email waiting for the Pacer is
	// handed back then rather than sent.
	waits     context.Context
	stopWaits context.CancelFunc
	// refusals counts the sends refused in a row with mail.ErrRefused
	// (the provider refuses every send until an operator acts), since the
	// provider last answered about an email itself; lastRefusal is the
	// latest such error's (scrubbed) text. Ready reads both.
	refusals    atomic.Int64
	lastRefusal atomic.Pointer[string]

	// suppressions and messages serve delivery feedback (feedback.go).
	suppressions *suppress.List
	messages     *sentmail.Book
}

// RefusalsNotReady is how many sends in a row the provider must refuse
// wholesale (mail.ErrRefused: sending paused, account suspended, domain not
// verified, ...) before Ready reports the mailer not ready. One send the
// provider accepts, or refuses for that email only, makes it ready again.
const RefusalsNotReady = 3

// ErrProviderRefusing is Ready's error while the mail provider refuses
// every send.
var ErrProviderRefusing = errors.New("mailer: the mail provider refuses every send")

// Ready is the mailer's readiness check (an admin.Ready): nil unless the
// last RefusalsNotReady sends or more were all refused wholesale, in which
// case the error wraps ErrProviderRefusing and says why. The mailer keeps
// retrying meanwhile; the first send that goes through makes it ready.
func (m *Mailer) Ready(context.Context) error {
	n := m.refusals.Load()
	if n < RefusalsNotReady {
		return nil
	}
	last := ""
	if p := m.lastRefusal.Load(); p != nil {
		last = *p
	}
	return fmt.Errorf("%w: the last %d sends were refused (%s)", ErrProviderRefusing, n, last)
}

// noteSend updates the refusal streak with the outcome of one send.
func (m *Mailer) noteSend(err error) {
	switch {
	case err == nil, mail.IsPermanent(err):
		m.refusals.Store(0)
	case errors.Is(err, mail.ErrRefused):
		text := err.Error()
		m.lastRefusal.Store(&text)
		m.refusals.Add(1)
	default:
		return // throttled, 5xx, timeouts: says nothing about refusals
	}
	v := 0.0
	if m.refusals.Load() >= RefusalsNotReady {
		v = 1
	}
	m.metrics.refusing.Set(v)
}

// Log keys.
const (
	keyMailID    = "mail_id"
	keyLinkID    = "link_id"
	keyPractice  = "practice_id"
	keyKind      = "kind"
	keyAttempt   = "attempt"
	keyMessageID = "message_id"
	keyErr       = "err"
	keyStatus    = "status"
	keyDerived   = "derived_link_id"
	keyReason    = "reason"
)

// DefaultMaxAttempts is Config.MaxAttempts's default.
const DefaultMaxAttempts = 20

// Outcomes recorded in mail.done.<mail_id>.
const (
	StatusSent   = "sent"
	StatusFailed = "failed"
)

// Done is the record at mail.done.<mail_id>: the mail was handed to the
// provider (sent) or given up for good (failed).
type Done struct {
	MailID     string `json:"mail_id"`
	Kind       string `json:"kind"`
	LinkID     string `json:"link_id,omitempty"`
	PracticeID string `json:"practice_id"`
	ClientID   string `json:"client_id"`
	Purpose    string `json:"purpose,omitempty"`
	// AppointmentID names the appointment of an appointment email.
	AppointmentID string `json:"appointment_id,omitempty"`
	Status        string `json:"status"`
	MessageID     string `json:"message_id,omitempty"`
	// AddressHash is suppress.Hash of the address a sent email went to:
	// the feedback consumer suppresses that address (and no address an
	// event names) when it matches an event by its linkpipe_mail tag.
	AddressHash string    `json:"address_hash,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	At          time.Time `json:"at"`
}

// Event returns the lifecycle event that reports d: links.<link_id>.sent
// or .failed, and for an email without a link (an in-person appointment's
// confirmation or cancellation) links.<mail_id>.sent or .failed, whose
// link_id is the mail id (see eventLinkID).
func (d *Done) Event() *events.LinkEvent {
	typ := events.TypeSent
	if d.Status == StatusFailed {
		typ = events.TypeFailed
	}
	return &events.LinkEvent{
		EventID: typ + "-" + d.MailID, Type: typ, LinkID: eventLinkID(d.LinkID, d.MailID), PracticeID: d.PracticeID,
		ClientID: d.ClientID, Purpose: d.Purpose, At: d.At, Reason: d.Reason,
		Permanent: d.Status == StatusFailed, MailID: d.MailID, MailKind: d.Kind, MessageID: d.MessageID,
		AppointmentID: d.AppointmentID,
	}
}

// eventLinkID is the link id under which the events of an email are
// published: its link's, or for an email without a link its mail id. Link
// ids start with "L" and mail ids without a link with "M" (mail.EventMailID),
// so the two never collide.
func eventLinkID(linkID, mailID string) string {
	if linkID != "" {
		return linkID
	}
	return mailID
}

// appointmentID is the id of a command's appointment, if any.
func appointmentID(cmd *mail.Command) string {
	if cmd.Appointment == nil {
		return ""
	}
	return cmd.Appointment.ID
}

type metrics struct {
	sent       prometheus.Counter
	failed     *prometheus.CounterVec
	sendTime   prometheus.Histogram
	toSent     prometheus.Histogram
	duplicates prometheus.Counter
	poison     prometheus.Counter
	refusing   prometheus.Gauge
	inFlight   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_mailer_sent_total", Help: "Emails handed to the mail provider."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_mailer_failed_total",
			Help: "Failed email attempts; permanent=\"true\" gave the email up, \"false\" will retry."}, []string{"permanent"}),
		sendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "linkpipe_mailer_send_seconds", Help: "Time the mail provider took to accept or refuse an email.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		toSent: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "linkpipe_action_to_sent_seconds",
			Help:    "Time from the action reaching ACTIONS to its email accepted by the mail provider (what a client waits).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 14)}), // 10 ms to ~1.5 h
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_mailer_duplicates_total", Help: "Mail commands delivered again after their email was done (not re-sent)."}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_mailer_poison_total", Help: "Undecodable mail commands moved to deadletter.mail."}),
		refusing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkpipe_mailer_provider_refusing",
			Help: "1 while the mail provider refuses every send (sending paused, account suspended, ...): /readyz answers 503."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkpipe_mailer_concurrency",
			Help: "Emails this mailer keeps in flight at most (LINKPIPE_MAIL_CONCURRENCY, or sized from the sending rate)."}),
	}
	if err := errors.Join(
		bus.Register(reg, &m.sent), bus.Register(reg, &m.failed), bus.Register(reg, &m.sendTime), bus.Register(reg, &m.toSent),
		bus.Register(reg, &m.duplicates), bus.Register(reg, &m.poison), bus.Register(reg, &m.refusing), bus.Register(reg, &m.inFlight),
	); err != nil {
		return metrics{}, fmt.Errorf("mailer: metrics: %w", err)
	}
	return m, nil
}

// New checks cfg and returns a Mailer; Run consumes.
func New(cfg Config) (*Mailer, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("mailer: JS is required")
	case cfg.Keys == nil:
		return nil, errors.New("mailer: Keys is required")
	case cfg.Practices == nil:
		return nil, errors.New("mailer: Practices is required")
	case cfg.Sender == nil:
		return nil, errors.New("mailer: Sender is required")
	case cfg.From == "":
		return nil, errors.New("mailer: From is required")
	case cfg.PublicURL == "":
		return nil, errors.New("mailer: PublicURL is required")
	}
	if err := events.CheckEmail("from", cfg.From); err != nil {
		return nil, fmt.Errorf("mailer: From: %w", err)
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	met, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	met.inFlight.Set(float64(cfg.Concurrency))
	m := &Mailer{
		cfg:        cfg,
		mailR:      bus.NewReader(cfg.JS, bus.StreamMail),
		recipients: recipient.NewBook(cfg.JS),
		linksR:     bus.NewReader(cfg.JS, bus.StreamLinks),
		log:        cfg.Log,
		metrics:    met,
	}
	m.waits, m.stopWaits = context.WithCancel(context.Background())
	m.suppressions, m.messages = suppress.NewList(cfg.JS), sentmail.NewBook(cfg.JS)
	// In-flight emails finish even when Run's ctx ends (the loop's
	// handler context is never cancelled): a send cut in the middle is
	// the one way to send an email twice. While a send is slow the loop
	// keeps the message (InProgress every third of AckWait).
	m.loop, err = bus.NewLoop(bus.LoopConfig{
		JS: cfg.JS, Stream: bus.StreamMail, Consumer: bus.ConsumerMailer, DeadLetter: deadLetterSource,
		Handler:     m.handle,
		Concurrency: cfg.Concurrency,
		PullMax:     cfg.Concurrency,
		Backoff:     bus.Backoff{Min: cfg.RetryMin, Max: cfg.RetryMax, Jitter: bus.DefaultJitter},
		OnSettled: func(s bus.Settlement) {
			if s.Outcome == bus.DeadLettered {
				m.metrics.poison.Inc()
			}
		},
		Log: cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("mailer: %w", err)
	}
	return m, nil
}

// Run consumes mail commands until ctx ends, then lets the emails in flight
// finish, hands back the commands it had buffered but not started, and
// returns nil. Streams and the consumer must exist (bus.Setup); a consumer
// that fails is re-opened.
func (m *Mailer) Run(ctx context.Context) error {
	// Emails still waiting for their turn go back to the queue.
	stop := context.AfterFunc(ctx, m.stopWaits)
	defer stop()
	return m.loop.Run(ctx)
}

// deadLetterSource is the suffix of the dead-letter subject: deadletter.mail.
const deadLetterSource = "mail"

// errPoison marks a command that can never be handled.
var errPoison = errors.New("mailer: undecodable mail command")

func decodeCommand(msg jetstream.Msg) (*mail.Command, error) {
	var cmd mail.Command
	if err := json.Unmarshal(msg.Data(), &cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	switch {
	case !events.ValidID(cmd.MailID):
		return nil, fmt.Errorf("%w: mail_id %q", errPoison, cmd.MailID)
	case msg.Subject() != bus.MailCommandPrefix+cmd.MailID:
		return nil, fmt.Errorf("%w: subject %s does not match mail_id %s", errPoison, msg.Subject(), cmd.MailID)
	case cmd.Kind == "":
		return nil, fmt.Errorf("%w: no kind", errPoison)
	case !events.ValidID(cmd.PracticeID):
		return nil, fmt.Errorf("%w: practice_id %q", errPoison, cmd.PracticeID)
	case cmd.To.Email == "":
		return nil, fmt.Errorf("%w: no recipient", errPoison)
	case cmd.LinkID != "" && !events.ValidID(cmd.LinkID):
		// It names the subject of the command's lifecycle events.
		return nil, fmt.Errorf("%w: link_id %q", errPoison, cmd.LinkID)
	case !events.ValidID(cmd.To.ID):
		return nil, fmt.Errorf("%w: to.id %q", errPoison, cmd.To.ID)
	case cmd.LinkID != "" && (cmd.Kid == "" || cmd.Purpose == "" || cmd.MintEventID == ""):
		return nil, fmt.Errorf("%w: link %q without kid, purpose or mint_event_id", errPoison, cmd.LinkID)
	}
	return &cmd, nil
}

// outcome is what to do with a message after handling.
type outcome struct {
	retry bool
	err   error
}

// handle sends one mail command (a bus.Handler): nil acks it, a poison
// command is dead-lettered, any other error retries it with backoff.
func (m *Mailer) handle(ctx context.Context, msg jetstream.Msg) error {
	attempt := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		attempt = md.NumDelivered
	}
	cmd, err := decodeCommand(msg)
	if err != nil {
		return bus.Poison(err)
	}
	log := m.log.With(keyMailID, cmd.MailID, keyLinkID, cmd.LinkID, keyPractice, cmd.PracticeID, keyKind, cmd.Kind)
	out := m.process(ctx, msg, cmd, attempt, log)
	if !out.retry {
		return nil
	}
	if out.err == nil {
		return fmt.Errorf("mailer: mail %s: retry", cmd.MailID)
	}
	return fmt.Errorf("mailer: mail %s: %w", cmd.MailID, out.err)
}

// carriesLink reports whether the email shows the link (a cancellation
// names the link for its events but does not show it).
func carriesLink(cmd *mail.Command) bool {
	return cmd.LinkID != "" && cmd.Kind != mail.KindAppointmentCanceled
}

func (m *Mailer) process(ctx context.Context, msg jetstream.Msg, cmd *mail.Command, attempt uint64, log *slog.Logger) outcome {
	// 1. Done already? Then only make sure its event exists.
	var done Done
	if _, err := m.mailR.LastJSON(ctx, bus.MailDonePrefix+cmd.MailID, &done); err == nil {
		m.metrics.duplicates.Inc()
		log.Debug("mail already done; not sending again", keyStatus, done.Status)
		if err := m.ensureEvent(ctx, &done); err != nil {
			return outcome{retry: true, err: err}
		}
		return outcome{}
	} else if !errors.Is(err, bus.ErrNotFound) {
		return outcome{retry: true, err: err}
	}
	budget := uint64(m.cfg.MaxAttempts)
	if attempt > budget {
		// Redelivered past the budget without a send failing on its last
		// attempt (a missing key, an unknown kind, a crash, AckWait).
		return m.giveUp(ctx, msg, cmd, fmt.Sprintf("not sent after %d attempts", budget), log)
	}
	now := m.cfg.Clock.Now()
	if carriesLink(cmd) && !cmd.ExpiresAt.IsZero() && !now.Before(cmd.ExpiresAt) {
		return m.giveUp(ctx, msg, cmd, "the link expired before its email could be sent", log)
	}

	// The address on record: a link goes only to its own recipient,
	// whatever the command says (a forged or buggy command cannot send a
	// live link elsewhere).
	if cmd.LinkID != "" {
		to, err := m.recipients.Get(ctx, cmd.LinkID)
		switch {
		case errors.Is(err, recipient.ErrNotFound):
			return m.giveUp(ctx, msg, cmd, "no address on record for the link", log)
		case err != nil:
			return outcome{retry: true, err: err}
		case to.ID != cmd.To.ID:
			return m.giveUp(ctx, msg, cmd, "the mail command names another client than the link's", log)
		}
		cmd.To = to
	}

	// A suppressed address gets nothing (feedback.go).
	if out, stop := m.suppressed(ctx, msg, cmd, log); stop {
		return out
	}

	// 2. The link, re-derived: the command never carries the token.
	url := ""
	if carriesLink(cmd) {
		token, err := m.cfg.Keys.Mint(cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID)
		if err != nil {
			// A key this replica lacks: another replica (or this one after
			// a config fix) can send it.
			log.Error("cannot derive the link token: is LINKPIPE_LINK_KEY the issuer's?", keyErr, err)
			return outcome{retry: true, err: err}
		}
		if id, err := link.ID(token); err != nil || id != cmd.LinkID {
			log.Error("derived token does not match the link id: LINKPIPE_LINK_KEY differs from the issuer's", keyDerived, id)
			return outcome{retry: true, err: fmt.Errorf("mailer: token of %s does not match its link id", cmd.MailID)}
		}
		url = m.cfg.PublicURL + "/l/" + token
	}

	// 3. Render.
	p := m.cfg.Practices.Get(cmd.PracticeID)
	email, err := mail.Render(cmd, p, url)
	if errors.Is(err, mail.ErrUnknownKind) {
		// Written by a newer issuer: an upgraded replica will send it.
		log.Error("mail kind unknown to this mailer; leaving it for an upgraded replica", keyErr, err)
		return outcome{retry: true, err: err}
	} else if err != nil {
		return m.giveUp(ctx, msg, cmd, err.Error(), log)
	}
	email.From = fromAddress(p.Name, m.cfg.From)
	tag(email, cmd)

	// 4. Wait for the pace the provider allows, claim this delivery (only
	// one copy of it sends), then send.
	if m.cfg.Pacer != nil {
		if err := m.cfg.Pacer.Wait(m.waits); err != nil {
			return outcome{retry: true, err: err} // stopping: not sent, back to the queue
		}
	}
	if err := m.claim(ctx, cmd, attempt); err != nil {
		if errors.Is(err, errClaimed) {
			log.Info("another copy of this delivery is being sent; checking again later", keyAttempt, attempt)
		}
		return outcome{retry: true, err: err}
	}
	sendCtx, cancel := context.WithTimeout(ctx, m.cfg.SendTimeout)
	start := time.Now()
	messageID, err := m.cfg.Sender.Send(sendCtx, email)
	cancel()
	// A provider's error may quote the recipient (or the link): scrubbed
	// before it becomes a reason, a log line or the error bus.Loop logs.
	err = mail.ScrubError(err)
	m.metrics.sendTime.Observe(time.Since(start).Seconds())
	m.noteSend(err)
	if err != nil {
		if mail.IsPermanent(err) {
			return m.giveUp(ctx, msg, cmd, err.Error(), log)
		}
		if attempt >= budget {
			return m.giveUp(ctx, msg, cmd, fmt.Sprintf("not sent after %d attempts: %v", attempt, err), log)
		}
		m.metrics.failed.WithLabelValues("false").Inc()
		throttled := errors.Is(err, mail.ErrThrottled)
		if throttled && m.cfg.Pacer != nil {
			m.cfg.Pacer.Throttled()
		}
		// The first failure tells practice systems the email is delayed,
		// unless it is throttling: that only means "slower", and the
		// mailer's own pacing is what should prevent it.
		if attempt == 1 && !throttled {
			ev := m.event(cmd, events.TypeFailed, now)
			ev.EventID = "failed-" + cmd.MailID + "-retrying"
			ev.Reason = truncate("will retry: "+err.Error(), events.MaxReasonLen)
			if perr := m.publishEvent(ctx, ev); perr != nil {
				log.Warn("publishing the transient failure event failed", keyErr, perr)
			}
		}
		return outcome{retry: true, err: err}
	}
	m.metrics.sent.Inc()
	if !cmd.ActionAt.IsZero() {
		m.metrics.toSent.Observe(max(0, m.cfg.Clock.Now().Sub(cmd.ActionAt).Seconds()))
	}

	// 5. Record: done first (it is what stops a second send), then the
	// event. Retried here, not by redelivery, which would send again.
	done = Done{MailID: cmd.MailID, Kind: cmd.Kind, LinkID: cmd.LinkID, PracticeID: cmd.PracticeID,
		ClientID: cmd.To.ID, Purpose: cmd.Purpose, AppointmentID: appointmentID(cmd), Status: StatusSent,
		MessageID: messageID, AddressHash: suppress.Hash(cmd.To.Email), At: m.cfg.Clock.Now()}
	if err := m.record(ctx, &done); err != nil {
		log.Error("email sent but not recorded; a redelivery will send it again", keyMessageID, messageID, keyErr, err)
		return outcome{retry: true, err: err}
	}
	m.recordMessage(ctx, &done, cmd.To.Email, log)
	log.Debug("mail sent", keyMessageID, messageID, keyAttempt, attempt)
	return outcome{}
}

// giveUp records a permanent failure: the command is copied to
// deadletter.mail with the reason (Linkpipe-Reason), where `linkpipe
// deadletter replay` can re-drive it, then mail.done (failed) and
// links.<id>.failed (permanent) are published. The dead letter comes first:
// a crash before mail.done redelivers the command, whose second dead
// letter JetStream drops as a duplicate (its Nats-Msg-Id names the
// command's sequence). The reason is scrubbed of addresses and tokens
// (mail.Scrub) whoever wrote it.
func (m *Mailer) giveUp(ctx context.Context, msg jetstream.Msg, cmd *mail.Command, reason string, log *slog.Logger) outcome {
	reason = truncate(mail.Scrub(reason), events.MaxReasonLen)
	if err := retryShort(ctx, func() error {
		return bus.DeadLetter(ctx, m.cfg.JS, deadLetterSource, msg, errors.New(reason))
	}); err != nil {
		return outcome{retry: true, err: err}
	}
	m.metrics.failed.WithLabelValues("true").Inc()
	done := Done{MailID: cmd.MailID, Kind: cmd.Kind, LinkID: cmd.LinkID, PracticeID: cmd.PracticeID,
		ClientID: cmd.To.ID, Purpose: cmd.Purpose, AppointmentID: appointmentID(cmd), Status: StatusFailed,
		Reason: reason, At: m.cfg.Clock.Now()}
	if err := m.record(ctx, &done); err != nil {
		return outcome{retry: true, err: err}
	}
	log.Warn("mail failed permanently", keyReason, done.Reason)
	return outcome{}
}

// claimWait is how long a command whose delivery another copy claimed
// waits before it is delivered again: longer than the claimant's send and
// the tries of its done marker.
func (m *Mailer) claimWait() time.Duration { return m.cfg.SendTimeout + 2*doneTimeout }

// errClaimed: another copy of this delivery claimed it (see "After a NATS
// outage"); the command comes back after claimWait.
var errClaimed = errors.New("mailer: another copy of this delivery is being sent")

// claimRecord is the body of mail.sending.<mail_id>.<delivery>.
type claimRecord struct {
	MailID   string    `json:"mail_id"`
	Delivery uint64    `json:"delivery"`
	At       time.Time `json:"at"`
}

// claim publishes mail.sending.<mail_id>.<delivery>; it fails wrapping
// errClaimed (with claimWait as the retry delay) if another copy of the
// delivery did first. Its Nats-Msg-Id is unique to this copy, so
// JetStream's de-duplication never lets two copies both succeed.
func (m *Mailer) claim(ctx context.Context, cmd *mail.Command, delivery uint64) error {
	subj := bus.MailSendingPrefix + cmd.MailID + "." + strconv.FormatUint(delivery, 10)
	data, err := json.Marshal(&claimRecord{MailID: cmd.MailID, Delivery: delivery, At: m.cfg.Clock.Now()})
	if err != nil {
		return fmt.Errorf("mailer: encode claim: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, doneTimeout)
	defer cancel()
	_, err = bus.PublishOnce(tctx, m.cfg.JS, subj, "sending-"+rand.Text(), data, nil)
	switch {
	case errors.Is(err, bus.ErrDuplicate):
		return bus.RetryAfter(fmt.Errorf("%w (delivery %d)", errClaimed, delivery), m.claimWait())
	case err != nil:
		return fmt.Errorf("mailer: claim: %w", err)
	}
	return nil
}

// record publishes mail.done.<id> and the lifecycle event, retrying briefly;
// each try gives up after doneTimeout.
func (m *Mailer) record(ctx context.Context, d *Done) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("mailer: encode done: %w", err)
	}
	return retryShort(ctx, func() error {
		tctx, cancel := context.WithTimeout(ctx, doneTimeout)
		defer cancel()
		if _, err := bus.PublishOnce(tctx, m.cfg.JS, bus.MailDonePrefix+d.MailID, "done-"+d.MailID, data, nil); err != nil && !errors.Is(err, bus.ErrDuplicate) {
			return err
		}
		return m.publishEvent(tctx, d.Event())
	})
}

// ensureEvent publishes the event of a done mail unless the link's last
// event of that type already reports this mail (the crash window between
// mail.done and the event).
func (m *Mailer) ensureEvent(ctx context.Context, d *Done) error {
	ev := d.Event()
	var last events.LinkEvent
	if _, err := m.linksR.LastJSON(ctx, ev.Subject(), &last); err == nil && last.EventID == ev.EventID {
		return nil
	} else if err != nil && !errors.Is(err, bus.ErrNotFound) {
		return err
	}
	return m.publishEvent(ctx, ev)
}

func (m *Mailer) event(cmd *mail.Command, typ string, at time.Time) *events.LinkEvent {
	return &events.LinkEvent{
		EventID: typ + "-" + cmd.MailID, Type: typ, LinkID: eventLinkID(cmd.LinkID, cmd.MailID), PracticeID: cmd.PracticeID,
		ClientID: cmd.To.ID, Purpose: cmd.Purpose, At: at, MailID: cmd.MailID, MailKind: cmd.Kind,
		AppointmentID: appointmentID(cmd),
	}
}

func (m *Mailer) publishEvent(ctx context.Context, ev *events.LinkEvent) error {
	if err := bus.PublishEvent(ctx, m.cfg.JS, ev); err != nil {
		return fmt.Errorf("mailer: %w", err)
	}
	return nil
}

// retryShort runs fn up to 8 times over about 10 seconds.
func retryShort(ctx context.Context, fn func() error) error {
	delay := 50 * time.Millisecond
	var err error
	for range 8 {
		if err = fn(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 3*time.Second)
	}
	return err
}

// fromAddress shows the practice's name as the sender, with linkpipe's
// address: "Acme Therapy" <links@example.com> (RFC 2047-encoded if needed).
func fromAddress(name, addr string) string {
	name = mail.HeaderValue(name)
	if name == "" {
		return addr
	}
	return (&netmail.Address{Name: name, Address: addr}).String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 { // do not cut a UTF-8 sequence
		n--
	}
	return s[:n]
}
