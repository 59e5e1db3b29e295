package issuer

import (
	"context"
	"fmt"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// defaultRevokeReason is recorded when a revocation gives no reason.
const defaultRevokeReason = "revoked by the practice"

// Revocation and the actions before it.
//
// A revocation is ordered by its ACTIONS sequence: every link minted by an
// action with a lower sequence stops working, every link minted by a later
// action works. The issuer handles actions in parallel (and on several
// replicas), so the action that mints a link may be handled after the
// revocation, when the link's scope did not exist yet for the revocation to
// find. So a revocation first records itself on the client's revocation
// record (scope.Revocation, on SCOPES: every replica reads it, and it
// survives restarts), then revokes the scopes it finds; an action that makes
// a link current re-reads the record from the stream leader afterwards
// (enforceRevocation) and revokes its own link if a newer revocation is
// recorded. Both sides write, then read the other's subject from the
// leader: whichever order the stream put the two writes in, one of them
// sees the other.

// revocation is what a revocation writes to the scopes it revokes.
type revocation struct {
	eventID string
	seq     uint64
	reason  string
	at      time.Time
}

// linksRevoked handles actions.client.links_revoked: every live link of the
// client (sign-in, documents, appointments) stops working, refusing with
// reason revoked. It records the revocation on the client's revocation
// record, then lists the client's scopes (scope.<p>.<client>.>) and
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
// superseded; one whose scope did not exist yet is born revoked (the
// record). A used one-time link that has not expired is revoked (the
// browser that redeemed it could otherwise continue its session). An
// expired appointment link is revoked too (a reschedule
// could otherwise bring it back). A re-published revocation (its event id
// on the record already, under another sequence) changes nothing.
func (i *Issuer) linksRevoked(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.ClientLinksRevoked)
	log := d.log.With(keyClientID, a.Client.ID)
	reason := a.Reason
	if reason == "" {
		reason = defaultRevokeReason
	}
	rev := revocation{eventID: d.env.EventID, seq: d.seq, reason: reason, at: i.clock.Now()}
	record := scope.Revocation(a.PracticeID, a.Client.ID)
	republished, err := i.recordRevocation(ctx, record, rev)
	if err != nil {
		return result{}, err
	}
	if republished {
		log.Debug("revocation re-published; its first message revokes", keyOutcome, outcomeDuplicate)
		return result{outcome: outcomeDuplicate}, nil
	}
	subjects, err := i.scopes.ListClient(ctx, a.PracticeID, a.Client.ID)
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	revoked := 0
	for _, subj := range subjects {
		if subj == record {
			continue
		}
		did, err := i.revokeScope(ctx, subj, rev)
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

// recordRevocation makes rev the client's revocation record unless a
// newer revocation is recorded. republished: rev's event id was recorded
// under another sequence (a re-publish of a revocation whose first message
// does the work, until it is acked).
func (i *Issuer) recordRevocation(ctx context.Context, subject string, rev revocation) (republished bool, err error) {
	var h history
	_, _, err = i.scopes.Mutate(ctx, subject, func(cur scope.Entry) (*scope.State, error) {
		republished = false
		st := &cur.State
		switch {
		case cur.Found() && st.EventID == rev.eventID:
			republished = st.ActionSeq != rev.seq
			return nil, nil
		case cur.Found() && st.ActionSeq >= rev.seq:
			return nil, nil // a newer revocation is recorded; it covers this one's links
		}
		if cur.Found() {
			wrote, err := i.wroteBefore(ctx, subject, rev.eventID, scope.ChangeRevoked, &h)
			if err != nil {
				return nil, err
			}
			if wrote {
				republished = true
				return nil, nil
			}
		}
		at := rev.at
		return &scope.State{
			Change: scope.ChangeRevoked, RevokedAt: &at, RevokedReason: rev.reason,
			EventID: rev.eventID, ActionSeq: rev.seq, At: at,
		}, nil
	})
	if err != nil {
		return false, fmt.Errorf("issuer: record revocation: %w", err)
	}
	return republished, nil
}

// enforceRevocation is asked by an action at ACTIONS sequence seq that
// has made a link current in subject, before its email is queued: if the
// client's revocation record (read from the stream leader) names a newer
// revocation, the link is revoked now, as that revocation would have if
// it had found the scope. It reports whether the scope's link is revoked.
func (i *Issuer) enforceRevocation(ctx context.Context, subject string, seq uint64) (bool, error) {
	sub, err := scope.Parse(subject)
	if err != nil {
		return false, fmt.Errorf("issuer: %w", err)
	}
	rec, err := i.scopes.GetFromLeader(ctx, scope.Revocation(sub.Practice, sub.Client))
	if err != nil {
		return false, fmt.Errorf("issuer: read revocation record: %w", err)
	}
	st := &rec.State
	if !rec.Found() || st.ActionSeq <= seq {
		return false, nil
	}
	rev := revocation{eventID: st.EventID, seq: st.ActionSeq, reason: st.RevokedReason, at: st.At}
	if st.RevokedAt != nil {
		rev.at = *st.RevokedAt
	}
	if _, err := i.revokeScope(ctx, subject, rev); err != nil {
		return false, err
	}
	return true, nil
}

// revokeScope revokes the scope's link if it is live and was issued
// before rev; it reports whether it wrote. It reads the scope from the
// stream leader: a lagging replica answering "no state" would make it
// skip a scope with no compare-and-set to notice.
func (i *Issuer) revokeScope(ctx context.Context, subject string, rev revocation) (bool, error) {
	now := i.clock.Now()
	cur, err := i.scopes.GetFromLeader(ctx, subject)
	if err != nil {
		return false, fmt.Errorf("issuer: %w", err)
	}
	var h history
	_, wrote, err := i.scopes.MutateFrom(ctx, cur, func(cur scope.Entry) (*scope.State, error) {
		st := cur.State
		switch {
		case !cur.Found(), st.LinkID == "", st.RevokedAt != nil, st.CanceledAt != nil,
			st.OneTime && st.UsedAt != nil && !now.Before(st.ExpiresAt), st.ActionSeq > rev.seq:
			return nil, nil
		}
		applied, err := i.wroteBefore(ctx, subject, rev.eventID, scope.ChangeRevoked, &h)
		if err != nil || applied {
			return nil, err
		}
		at := rev.at
		st.Change, st.RevokedAt, st.RevokedReason = scope.ChangeRevoked, &at, rev.reason
		st.EventID, st.ActionSeq, st.At = rev.eventID, max(st.ActionSeq, rev.seq), at
		return &st, nil
	})
	if err != nil {
		return false, fmt.Errorf("issuer: %w", err)
	}
	return wrote, nil
}
