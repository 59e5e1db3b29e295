package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// linkSpec is what an action asks for: the link's purpose, scope, lifetime,
// recipient and the details its events and email carry.
type linkSpec struct {
	purpose  string
	scope    string
	client   events.Client
	oneTime  bool
	ttl      time.Duration
	mailKind string

	returnTo      string
	document      *events.Document
	shareID       string
	appointmentID string
}

// window is a link's validity and when it was issued.
type window struct {
	validFrom, expiresAt, at time.Time
	supersedes               string
}

// signin handles actions.signin.requested: a one-time link that supersedes
// the client's older sign-in links.
func (i *Issuer) signin(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.SigninRequested)
	pol := i.practices.Get(a.PracticeID).Policy
	return i.issue(ctx, d, linkSpec{
		purpose:  events.PurposeSignin,
		scope:    scope.Signin(a.PracticeID, a.Client.ID),
		client:   a.Client,
		oneTime:  true,
		ttl:      pol.SigninTTL,
		mailKind: mail.KindSignin,
		returnTo: a.ReturnTo,
	})
}

// document handles actions.document.shared: a one-time link to one
// document share, independent of the client's sign-in links.
func (i *Issuer) document(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.DocumentShared)
	pol := i.practices.Get(a.PracticeID).Policy
	doc := a.Document
	return i.issue(ctx, d, linkSpec{
		purpose:  events.PurposeDocument,
		scope:    scope.Document(a.PracticeID, a.Client.ID, a.ShareID),
		client:   a.Client,
		oneTime:  true,
		ttl:      pol.DocumentTTL,
		mailKind: mail.KindDocument,
		document: &doc,
		shareID:  a.ShareID,
	})
}

// issue mints the action's link and brings JetStream to the state where
// the link exists, is current in its scope (unless a newer action already
// owns the scope) and its email is queued. Each step first checks whether
// it is already done, so a redelivery or a re-publish completes what a
// crash interrupted and repeats nothing.
func (i *Issuer) issue(ctx context.Context, d *delivery, sp linkSpec) (result, error) {
	kid := i.keys.CurrentKid()
	token, err := i.keys.Mint(kid, sp.purpose, sp.scope, d.env.EventID)
	if err != nil {
		return result{}, fmt.Errorf("issuer: mint: %w", err)
	}
	linkID, err := link.ID(token)
	if err != nil {
		return result{}, fmt.Errorf("issuer: link id: %w", err)
	}
	log := d.log.With(keyLinkID, linkID, keyClientID, sp.client.ID)

	cur, err := i.scopes.Get(ctx, sp.scope)
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	// The issued event is published only once the scope holds a state, so
	// an empty scope proves the link was never issued.
	var issued *events.LinkEvent
	if cur.Found() {
		if issued, err = i.readIssued(ctx, linkID); err != nil {
			return result{}, err
		}
	}

	var (
		w       window
		current bool
		outcome string
	)
	if issued != nil {
		// Minted before: only the email may be missing.
		w = windowOf(issued)
		current = cur.State.Live(linkID)
		outcome = outcomeDuplicate
	} else {
		now := i.clock.Now()
		fresh := window{validFrom: now, expiresAt: now.Add(sp.ttl), at: now}
		rekeyed := false
		_, wrote, err := i.scopes.MutateFrom(ctx, cur, func(cur scope.Entry) (*scope.State, error) {
			st := &cur.State
			rekeyed, current = false, false
			switch {
			case cur.Found() && st.LinkID == linkID:
				// A previous attempt made it current and stopped before
				// publishing the issued event.
				w = window{validFrom: st.ValidFrom, expiresAt: st.ExpiresAt, at: st.At, supersedes: st.Supersedes}
				current, outcome = st.Live(linkID), outcomeIssued
				return nil, nil
			case cur.Found() && st.ActionSeq == d.seq:
				// This very message already issued the scope's link under
				// another key id (the link key rotated in between).
				rekeyed = true
				return nil, nil
			case cur.Found() && st.ActionSeq > d.seq:
				// A newer action already owns the scope: the link exists
				// but is born superseded, and is not mailed.
				w, outcome = fresh, outcomeSuperseded
				return nil, nil
			}
			w = fresh
			if cur.Found() {
				w.supersedes = st.LinkID
			}
			return &scope.State{
				Change: scope.ChangeIssued, LinkID: linkID, Purpose: sp.purpose, OneTime: sp.oneTime,
				ValidFrom: w.validFrom, ExpiresAt: w.expiresAt, Supersedes: w.supersedes,
				EventID: d.env.EventID, ActionSeq: d.seq, At: w.at, Kid: kid,
			}, nil
		})
		if err != nil {
			return result{}, fmt.Errorf("issuer: %w", err)
		}
		if rekeyed {
			log.Debug("action already issued its link under a previous key", keyOutcome, outcomeDuplicate)
			return result{outcome: outcomeDuplicate}, nil
		}
		if wrote {
			current, outcome = true, outcomeIssued
		}
		// The address on record goes before the issued event: a link that
		// exists has one (its emails and renewals go there, nowhere else).
		if err := i.recordAddress(ctx, d, linkID, sp.client); err != nil {
			return result{}, err
		}
		if err := i.publishIssued(ctx, d, sp, linkID, w); err != nil {
			return result{}, err
		}
	}

	if current {
		// A revocation newer than this action, handled before the scope
		// held the link, revokes it now; it is not mailed.
		revoked, err := i.enforceRevocation(ctx, sp.scope, d.seq)
		if err != nil {
			return result{}, err
		}
		if revoked {
			log.Info("link born revoked: a newer revocation was handled first; not mailed", keyOutcome, outcomeBornRevoked)
			return result{outcome: outcomeBornRevoked, linkID: linkID}, nil
		}
		if err := i.queueMail(ctx, d, sp, kid, linkID, w); err != nil {
			return result{}, err
		}
	}
	switch outcome {
	case outcomeIssued:
		log.Debug("link issued", keySupersedes, w.supersedes, keyMailed, current)
	case outcomeSuperseded:
		log.Debug("link born superseded: a newer action owns the scope; not mailed")
	default:
		log.Debug("link already issued; missing steps completed", keyMailed, current)
	}
	return result{outcome: outcome, linkID: linkID}, nil
}

func windowOf(ev *events.LinkEvent) window {
	w := window{at: ev.At, supersedes: ev.Supersedes}
	if ev.ValidFrom != nil {
		w.validFrom = *ev.ValidFrom
	}
	if ev.ExpiresAt != nil {
		w.expiresAt = *ev.ExpiresAt
	}
	return w
}

// readIssued returns the link's issued event, nil if there is none.
func (i *Issuer) readIssued(ctx context.Context, linkID string) (*events.LinkEvent, error) {
	var ev events.LinkEvent
	_, err := i.links.FirstJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("issuer: read issued event: %w", err)
	}
	return &ev, nil
}

// recordAddress records to as the link's address on record and as its
// client's current address (where renewals go).
func (i *Issuer) recordAddress(ctx context.Context, d *delivery, linkID string, to events.Client) error {
	if err := i.recipients.Put(ctx, linkID, to); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if err := i.recipients.PutClient(ctx, d.env.PracticeID, to, d.seq); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	return nil
}

// publishIssued publishes links.<link_id>.issued once (Nats-Msg-Id
// issued-<link_id>).
func (i *Issuer) publishIssued(ctx context.Context, d *delivery, sp linkSpec, linkID string, w window) error {
	ev := events.LinkEvent{
		EventID: "issued-" + linkID, Type: events.TypeIssued, LinkID: linkID,
		PracticeID: d.env.PracticeID, ClientID: sp.client.ID, Purpose: sp.purpose, At: w.at,
		CauseEventID: d.env.EventID, ReturnTo: sp.returnTo, ShareID: sp.shareID,
		AppointmentID: sp.appointmentID,
		ValidFrom:     &w.validFrom, ExpiresAt: &w.expiresAt, Supersedes: w.supersedes,
	}
	if sp.document != nil {
		ev.DocumentID = sp.document.ID
	}
	if err := bus.PublishEvent(ctx, i.js, &ev); err != nil {
		return fmt.Errorf("issuer: publish issued event: %w", err)
	}
	return nil
}

// queueMail queues the link's email as mail.cmd.<link_id>-<kind>. The
// command names the key id and action, never the token.
func (i *Issuer) queueMail(ctx context.Context, d *delivery, sp linkSpec, kid, linkID string, w window) error {
	cmd := mail.Command{
		MailID: mail.LinkMailID(linkID, sp.mailKind), Kind: sp.mailKind,
		PracticeID: d.env.PracticeID, To: sp.client, LinkID: linkID,
		Kid: kid, Purpose: sp.purpose, Scope: sp.scope, MintEventID: d.env.EventID,
		ValidFrom: w.validFrom, ExpiresAt: w.expiresAt, Document: sp.document,
		CauseEventID: d.env.EventID, At: w.at, ActionAt: d.at,
	}
	return mail.Queue(ctx, i.js, &cmd)
}
