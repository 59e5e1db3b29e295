package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/feedback"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/pace"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/projector"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/support"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// Deps are what a worker takes from the process that hosts it: one set
// per process, shared by every worker in it (Process.Deps).
type Deps struct {
	JS        jetstream.JetStream
	NC        *nats.Conn
	Practices *practice.Directory
	Metrics   *prometheus.Registry
	// Backlog, if set, is told which consumer each worker uses.
	Backlog *bus.ConsumerMetrics
	// Ready, if set, is the process's own readiness check (not stopping),
	// added to the /readyz a worker serves itself (the redeemer's).
	Ready admin.Ready
	Clock clock.Clock
	// Log is tagged with the worker's name.
	Log *slog.Logger
}

// watch adds the worker's consumer to the process's backlog metrics.
func (d Deps) watch(stream, consumer string) {
	if d.Backlog != nil {
		d.Backlog.Watch(stream, consumer)
	}
}

// NewIssuer builds the issuer on its own bbolt file (opened with
// issuer.Buckets()).
func NewIssuer(d Deps, db *bolt.DB, keys *link.Keyring) (*issuer.Issuer, error) {
	d.watch(bus.StreamActions, bus.ConsumerIssuer)
	return issuer.New(issuer.Config{JS: d.JS, DB: db, Keys: keys, Practices: d.Practices,
		Clock: d.Clock, Log: d.Log, Metrics: d.Metrics})
}

// MailerSettings are the mailer's own settings.
type MailerSettings struct {
	Keys   *link.Keyring
	Sender mailer.Sender
	// From is the From address of every email.
	From string
	// PublicURL is the redeemer's base URL.
	PublicURL string
	// MaxAttempts is the attempt budget of one email
	// (LINKPIPE_MAIL_MAX_ATTEMPTS; 0: mailer.DefaultMaxAttempts).
	MaxAttempts int
	// Pacer paces the sends (NewPacer); nil sends unpaced.
	Pacer mailer.Pacer
	// Concurrency is LINKPIPE_MAIL_CONCURRENCY (0: the mailer's default).
	Concurrency int
}

// NewMailer builds the mailer.
func NewMailer(d Deps, s MailerSettings) (*mailer.Mailer, error) {
	d.watch(bus.StreamMail, bus.ConsumerMailer)
	return mailer.New(mailer.Config{JS: d.JS, Keys: s.Keys, Practices: d.Practices, Sender: s.Sender,
		From: s.From, PublicURL: s.PublicURL, MaxAttempts: s.MaxAttempts, Clock: d.Clock, Log: d.Log, Metrics: d.Metrics,
		Pacer: s.Pacer, Concurrency: s.Concurrency})
}

// NewPacer starts the limiter every mailer replica shares the sending
// rate with over d.NC: rate emails/s (LINKPIPE_SES_MAX_RATE), or 0 to read
// quota (SES GetAccount). The caller closes it after the mailer stopped.
func NewPacer(ctx context.Context, d Deps, rate float64, quota pace.Quota) (*pace.Limiter, error) {
	cfg := pace.Config{NC: d.NC, Rate: rate, Quota: quota, Clock: d.Clock, Log: d.Log}
	if d.Metrics != nil {
		cfg.Metrics = d.Metrics
	}
	return pace.Start(ctx, cfg)
}

// FeedbackSettings are the SES feedback consumer's settings (the mailer
// process runs it when LINKPIPE_SES_EVENTS_QUEUE_URL is set).
type FeedbackSettings struct {
	Queue    feedback.Queue
	QueueURL string
	// RetryDelay is how long an event that could not be applied yet
	// waits before it is received again (0: the consumer's default).
	RetryDelay time.Duration
}

// NewFeedback builds the consumer of SES's delivery, bounce and complaint
// events.
func NewFeedback(d Deps, s FeedbackSettings) (*feedback.Consumer, error) {
	return feedback.New(feedback.Config{JS: d.JS, Queue: s.Queue, QueueURL: s.QueueURL,
		RetryDelay: s.RetryDelay, Clock: d.Clock, Log: d.Log, Metrics: d.Metrics})
}

// Together runs every runner until ctx ends; the first that fails stops
// the others, and its error is returned once all have returned.
func Together(runners ...Runner) Runner {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, len(runners))
		for _, r := range runners {
			go func() {
				err := r(ctx)
				if err != nil {
					cancel()
				}
				errs <- err
			}()
		}
		var first error
		for range runners {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

// RedeemerSettings are the redeemer's own settings.
type RedeemerSettings struct {
	// Seeds are the decoded LINKPIPE_TICKET_KEY: the first signs tickets
	// (and keys the session cookie), all are in the JWKS.
	Seeds     [][]byte
	PublicURL string
	PortalURL string
	// TrustedProxies (LINKPIPE_TRUSTED_PROXIES) may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
}

// NewRedeemer builds the redeemer and the signer of its tickets. Its
// Handler serves the link routes, the JWKS, /healthz and /readyz; its
// metrics are on the process's admin mux.
func NewRedeemer(d Deps, s RedeemerSettings) (*redeemer.Redeemer, *ticket.Signer, error) {
	signer, err := ticket.NewRotatingSigner(s.Seeds, s.PublicURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", config.TicketKey.Env, err)
	}
	rd, err := redeemer.New(redeemer.Config{JS: d.JS, NC: d.NC, Practices: d.Practices, Signer: signer,
		PublicURL: s.PublicURL, PortalURL: s.PortalURL, CookieKey: redeemer.CookieKeyFromSeed(s.Seeds[0]),
		TrustedProxies: s.TrustedProxies, Ready: d.Ready, Clock: d.Clock, Log: d.Log, Metrics: d.Metrics})
	if err != nil {
		return nil, nil, err
	}
	return rd, signer, nil
}

// NewProjector builds the projector (SCOPES -> used/revoked lifecycle
// events) from what its process shares; the redeemer's process runs it.
func NewProjector(d Deps) (*projector.Projector, error) {
	d.watch(bus.StreamScopes, bus.ConsumerProjector)
	return projector.New(projector.Config{JS: d.JS, Log: d.Log, Metrics: d.Metrics})
}

// InboxPath is where the mail sink's inbox is served.
const InboxPath = "/inbox"

// MountInbox serves the sink's inbox on mux: /inbox, /inbox/<id> and
// /inbox.json.
func MountInbox(mux *http.ServeMux, sink *mailer.Sink) {
	h := sink.Handler(InboxPath)
	mux.Handle(InboxPath, h)
	mux.Handle(InboxPath+"/", h)
	mux.Handle(InboxPath+".json", h)
}

// MountSupport serves the support view (support.Path and its .json) on
// mux, reading the ledger with d.JS: on the admin address of the workers
// that may read SCOPES and LINKS (issuer, redeemer), only to requests
// addressed to an IP, localhost or a service name (admin.InternalHostsOnly,
// against DNS rebinding).
func MountSupport(mux *http.ServeMux, d Deps) {
	h := admin.InternalHostsOnly(support.Handler(d.JS, d.Clock, d.Log))
	mux.Handle(support.Path, h)
	mux.Handle(support.Path+".json", h)
}
