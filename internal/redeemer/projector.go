package redeemer

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Run is the projector: it follows the durable consumer "projector" on
// SCOPES (shared by every replica) and, for each state change, publishes the
// lifecycle event it implies, with Nats-Msg-Id "scope-<stream seq>" so a
// redelivery publishes nothing new; then acks. It returns nil when ctx ends.
func (r *Redeemer) Run(ctx context.Context) error {
	cons, err := r.js.Consumer(ctx, bus.StreamScopes, bus.ConsumerProjector)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("redeemer: projector consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { r.project(ctx, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil {
				r.log.Warn("redeemer: projector consume", keyErr, err)
			}
		}))
	if err != nil {
		return fmt.Errorf("redeemer: projector consume: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

// project handles one scope message.
func (r *Redeemer) project(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		r.log.Error("redeemer: projector message without metadata", keySubject, m.Subject(), keyErr, err)
		_ = m.Term()
		return
	}
	var st scope.State
	if err := json.Unmarshal(m.Data(), &st); err != nil {
		err = fmt.Errorf("redeemer: scope state unreadable: %w", err)
		if dlErr := bus.DeadLetter(ctx, r.js, "scopes", m, err); dlErr != nil {
			r.log.Error("redeemer: dead letter", keySubject, m.Subject(), keyErr, dlErr)
			_ = m.NakWithDelay(backoff(md.NumDelivered))
			return
		}
		r.log.Error("redeemer: poison scope message", keySubject, m.Subject(), keySeq, md.Sequence.Stream, keyErr, err)
		_ = m.Term()
		return
	}
	ev := Derive(m.Subject(), &st, md.Sequence.Stream)
	if ev == nil {
		r.m.projected.WithLabelValues("none").Inc()
		_ = m.Ack()
		return
	}
	if err := bus.PublishEvent(ctx, r.js, ev); err != nil {
		if ctx.Err() == nil {
			r.log.Warn("redeemer: projector publish", keySubject, ev.Subject(), keySeq, md.Sequence.Stream, keyErr, err)
		}
		_ = m.NakWithDelay(backoff(md.NumDelivered))
		return
	}
	r.m.projected.WithLabelValues(ev.Type).Inc()
	_ = m.Ack()
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
	// scope.<practice>.<client>.<kind>[.<id>]
	if parts := strings.Split(scopeSubject, "."); len(parts) >= 4 {
		ev.PracticeID, ev.ClientID = parts[1], parts[2]
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

// backoff is the redelivery delay after n deliveries: 250ms doubling, at
// most 30s.
func backoff(n uint64) time.Duration {
	d := 250 * time.Millisecond
	for i := uint64(1); i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}
