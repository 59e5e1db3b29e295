package issuer

import (
	"context"
	"fmt"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// defaultRevokeReason is recorded when a revocation gives no reason.
const defaultRevokeReason = "revoked by the practice"

// linksRevoked handles actions.client.links_revoked: every live link of the
// client (sign-in, documents, appointments) stops working, refusing with
// reason revoked. It lists the client's scopes (scope.<p>.<client>.>) and
// writes to each scope whose link is live a "revoked" state (revoked_at now,
// the action's reason or "revoked by the practice"), conditionally, retrying
// on conflict. The redeemer's projector derives links.<id>.revoked.
//
// Not touched: a scope without a link (in-person appointment), one already
// revoked or canceled, a one-time link used and expired, and a scope whose link
// was issued by an action newer than the revocation (a sign-in requested
// after it issues a fresh working link, whatever the order the two are
// handled in). The revocation sets the scope's action_seq to its own, so a
// sign-in or share requested before it but handled after it is born
// superseded. A used one-time link that has not expired is revoked (the
// browser that redeemed it could otherwise continue its session). An
// expired appointment link is revoked too (a reschedule
// could otherwise bring it back). A re-published revocation changes
// nothing it changed before.
func (i *Issuer) linksRevoked(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.ClientLinksRevoked)
	log := d.log.With(keyClientID, a.Client.ID)
	reason := a.Reason
	if reason == "" {
		reason = defaultRevokeReason
	}
	subjects, err := i.scopes.ListClient(ctx, a.PracticeID, a.Client.ID)
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	revoked := 0
	for _, subj := range subjects {
		did, err := i.revokeScope(ctx, d, subj, reason)
		if err != nil {
			return result{}, err
		}
		if did {
			revoked++
			log.Debug("link revoked", keyScope, subj)
		}
	}
	i.m.revoked.Add(float64(revoked))
	log.Info("client's links revoked", keyCount, revoked, keyReason, reason)
	return result{outcome: outcomeRevoked}, nil
}

// revokeScope revokes the scope's link if it is live; it reports whether
// it wrote.
func (i *Issuer) revokeScope(ctx context.Context, d *delivery, subject, reason string) (bool, error) {
	now := i.clock.Now()
	var h history
	_, s, err := i.mutate(ctx, subject, func(cur *scope.Entry) (step, error) {
		st := cur.State
		switch {
		case !cur.Found(), st.LinkID == "", st.RevokedAt != nil, st.CanceledAt != nil,
			st.OneTime && st.UsedAt != nil && !now.Before(st.ExpiresAt), st.ActionSeq > d.seq:
			return step{}, nil
		}
		applied, err := i.wroteBefore(ctx, subject, d.env.EventID, scope.ChangeRevoked, &h)
		if err != nil || applied {
			return step{}, err
		}
		st.Change, st.RevokedAt, st.RevokedReason = scope.ChangeRevoked, &now, reason
		st.EventID, st.ActionSeq, st.At = d.env.EventID, max(st.ActionSeq, d.seq), now
		return step{next: &st, outcome: outcomeRevoked}, nil
	})
	return s.next != nil, err
}
