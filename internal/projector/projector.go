// Package projector owns the derived lifecycle events of SCOPES: it
// follows the durable consumer "projector" on the SCOPES stream (shared by
// every replica) and, for each scope state change (in order within a
// scope, several scopes at once), publishes the event it
// implies on LINKS — links.<link_id>.used for a redemption, .revoked for a
// revocation or a canceled appointment — with Nats-Msg-Id "scope-<stream
// seq>", so a redelivery publishes nothing new; then acks. Because the
// events are derived from the state, a crash between a state change and its
// event cannot lose the event. Undecodable states are dead-lettered to
// deadletter.scopes. The consume loop is bus.Loop's.
package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/scope"
)

const (
	// deadLetterSource is the suffix of the dead-letter subject:
	// deadletter.scopes.
	deadLetterSource = "scopes"
	// pullMax is how many scope messages the consumer buffers.
	pullMax = 500
	// lanes is how many scopes are projected at once (each in order):
	// few, for the projector shares its process's NATS connection with
	// the redeemer's compare-and-set writes (32 lanes delayed those in
	// the load runs; 4 kept the used events within ~100 ms of a burst).
	lanes = 4
	// handleTimeout bounds one message's publish; it stays below the
	// consumer's AckWait (30s, bus.ConsumerConfigs).
	handleTimeout = 10 * time.Second
	// Retry backoff: 250ms doubling per delivery, at most 30s (with
	// bus.DefaultJitter).
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

// Config configures a Projector. JS is required.
type Config struct {
	JS jetstream.JetStream
	// Log defaults to a logger that discards.
	Log *slog.Logger
	// Metrics, if set, receives linkpipe_redeemer_projected_total.
	Metrics prometheus.Registerer
}

// Projector turns scope state changes into lifecycle events.
type Projector struct {
	js        jetstream.JetStream
	projected *prometheus.CounterVec
	loop      *bus.Loop
}

// New checks cfg and returns a Projector; Run consumes.
func New(cfg Config) (*Projector, error) {
	if cfg.JS == nil {
		return nil, errors.New("projector: Config.JS is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Projector{
		js: cfg.JS,
		// The name predates this package (the projector ran in the
		// redeemer); dashboards use it.
		projected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_projected_total",
			Help: "Scope changes the projector turned into lifecycle events, by event type (none: nothing to publish).",
		}, []string{"type"}),
	}
	if err := bus.Register(cfg.Metrics, &p.projected); err != nil {
		return nil, fmt.Errorf("projector: metrics: %w", err)
	}
	loop, err := bus.NewLoop(bus.LoopConfig{
		JS: cfg.JS, Stream: bus.StreamScopes, Consumer: bus.ConsumerProjector, DeadLetter: deadLetterSource,
		Handler:    p.handle,
		Middleware: []bus.Middleware{bus.Timeout(handleTimeout)},
		// In stream order within a scope (a lane per scope subject's
		// hash), scopes side by side: one publish round trip at a time
		// made a burst of clicks trail by seconds.
		Lane: scopeLane, Lanes: lanes,
		Concurrency: 1,
		PullMax:     pullMax,
		Backoff:     bus.Backoff{Min: backoffMin, Max: backoffMax, Jitter: bus.DefaultJitter},
		Log:         cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("projector: %w", err)
	}
	p.loop = loop
	return p, nil
}

// Run projects until ctx ends and returns nil. Streams and the consumer
// must exist (bus.Setup); a consumer that fails is re-opened.
func (p *Projector) Run(ctx context.Context) error {
	return p.loop.Run(ctx)
}

// scopeLane puts every state of one scope on the same lane, so that its
// events are published in the order of its states.
func scopeLane(m jetstream.Msg) (int, bool) {
	h := fnv.New32a()
	h.Write([]byte(m.Subject()))
	return int(h.Sum32() % lanes), true
}

// handle projects one scope message (a bus.Handler).
func (p *Projector) handle(ctx context.Context, m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return bus.Poison(fmt.Errorf("projector: message without metadata: %w", err))
	}
	var st scope.State
	if err := json.Unmarshal(m.Data(), &st); err != nil {
		return bus.Poison(fmt.Errorf("projector: scope state unreadable: %w", err))
	}
	ev := Derive(m.Subject(), &st, md.Sequence.Stream)
	if ev == nil {
		p.projected.WithLabelValues("none").Inc()
		return nil
	}
	if err := bus.PublishEvent(ctx, p.js, ev); err != nil {
		return fmt.Errorf("projector: publish %s (scope seq %d): %w", ev.Subject(), md.Sequence.Stream, err)
	}
	p.projected.WithLabelValues(ev.Type).Inc()
	return nil
}

// Derive returns the lifecycle event a scope state message at stream
// sequence seq implies, or nil: "used" → links.<id>.used, "revoked" →
// .revoked with the revocation reason, "canceled" → .revoked with reason
// "canceled"; "issued" and "rescheduled" imply nothing here (the issuer
// publishes issued itself).
func Derive(scopeSubject string, st *scope.State, seq uint64) *events.LinkEvent {
	ev := &events.LinkEvent{
		EventID: "scope-" + strconv.FormatUint(seq, 10), LinkID: st.LinkID, Purpose: st.Purpose,
		CauseEventID: st.EventID, At: st.At,
	}
	if sub, err := scope.Parse(scopeSubject); err == nil {
		ev.PracticeID, ev.ClientID = sub.Practice, sub.Client
	}
	switch st.Change {
	case scope.ChangeUsed:
		ev.Type = events.TypeUsed
		if st.UsedAt != nil {
			ev.At = *st.UsedAt
		}
	case scope.ChangeRevoked:
		ev.Type = events.TypeRevoked
		ev.Reason = st.RevokedReason
		if st.RevokedAt != nil {
			ev.At = *st.RevokedAt
		}
	case scope.ChangeCanceled:
		ev.Type = events.TypeRevoked
		ev.Reason = events.ReasonCanceled
		if st.CanceledAt != nil {
			ev.At = *st.CanceledAt
		}
	default:
		return nil
	}
	if !events.ValidID(ev.LinkID) {
		return nil
	}
	return ev
}
