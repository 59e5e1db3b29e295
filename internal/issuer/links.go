package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// maxCASAttempts bounds the re-read-and-retry loop on a scope that other
// writers keep changing; past it the action is retried later.
const maxCASAttempts = 32

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
		scope:    link.SigninScope(a.PracticeID, a.Client.ID),
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
		scope:    link.DocumentScope(a.PracticeID, a.Client.ID, a.ShareID),
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
	token, err := i.keys.Mint(kid, sp.purpose, d.env.PracticeID, d.env.EventID)
	if err != nil {
		return result{}, fmt.Errorf("issuer: mint: %w", err)
	}
	linkID, err := link.ID(token)
	if err != nil {
		return result{}, fmt.Errorf("issuer: link id: %w", err)
	}
	log := d.log.With(keyLinkID, linkID, keyClientID, sp.client.ID)

	st, seq, found, err := i.readScope(ctx, sp.scope)
	if err != nil {
		return result{}, err
	}
	// The issued event is published only once the scope holds a state, so
	// an empty scope proves the link was never issued.
	var issued *events.LinkEvent
	if found {
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
		current = mailable(st, found, linkID)
		outcome = outcomeDuplicate
	} else {
		now := i.clock.Now()
		fresh := window{validFrom: now, expiresAt: now.Add(sp.ttl), at: now}
	cas:
		for attempt := 1; ; attempt++ {
			switch {
			case found && st.LinkID == linkID:
				// A previous attempt made it current and stopped before
				// publishing the issued event.
				w = window{validFrom: st.ValidFrom, expiresAt: st.ExpiresAt, at: st.At, supersedes: st.Supersedes}
				current = mailable(st, true, linkID)
				outcome = outcomeIssued
				break cas
			case found && st.ActionSeq == d.seq:
				// This very message already issued the scope's link under
				// another key id (the link key rotated in between).
				log.Info("action already issued its link under a previous key", keyOutcome, outcomeDuplicate)
				return result{outcome: outcomeDuplicate}, nil
			case found && st.ActionSeq > d.seq:
				// A newer action already owns the scope: the link exists
				// but is born superseded, and is not mailed.
				w = fresh
				outcome = outcomeSuperseded
				break cas
			}
			w = fresh
			if found {
				w.supersedes = st.LinkID
			}
			err := i.writeScope(ctx, sp, seq, link.State{
				Change: link.ChangeIssued, LinkID: linkID, Purpose: sp.purpose, OneTime: sp.oneTime,
				ValidFrom: w.validFrom, ExpiresAt: w.expiresAt, Supersedes: w.supersedes,
				EventID: d.env.EventID, ActionSeq: d.seq, At: w.at, Kid: kid,
			})
			if err == nil {
				current = true
				outcome = outcomeIssued
				break cas
			}
			if !errors.Is(err, bus.ErrConflict) || attempt >= maxCASAttempts {
				return result{}, err
			}
			if st, seq, found, err = i.readScope(ctx, sp.scope); err != nil {
				return result{}, err
			}
		}
		if err := i.publishIssued(ctx, d, sp, linkID, w); err != nil {
			return result{}, err
		}
	}

	if current {
		if err := i.queueMail(ctx, d, sp, kid, linkID, w); err != nil {
			return result{}, err
		}
	}
	switch outcome {
	case outcomeIssued:
		log.Info("link issued", keySupersedes, w.supersedes, keyMailed, current)
	case outcomeSuperseded:
		log.Info("link born superseded: a newer action owns the scope; not mailed")
	default:
		log.Info("link already issued; missing steps completed", keyMailed, current)
	}
	return result{outcome: outcome, linkID: linkID}, nil
}

// mailable reports whether the link is the scope's live current link, the
// only kind worth an email.
func mailable(st link.State, found bool, linkID string) bool {
	return found && st.LinkID == linkID && st.RevokedAt == nil && st.CanceledAt == nil
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

// readScope returns the scope's state and its sequence; found is false
// (and seq 0) for a scope that never had a state.
func (i *Issuer) readScope(ctx context.Context, scope string) (st link.State, seq uint64, found bool, err error) {
	seq, err = i.scopes.LastJSON(ctx, scope, &st)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return link.State{}, 0, false, nil
	case err != nil:
		return link.State{}, 0, false, fmt.Errorf("issuer: read scope: %w", err)
	}
	return st, seq, true, nil
}

// readIssued returns the link's issued event, nil if there is none.
func (i *Issuer) readIssued(ctx context.Context, linkID string) (*events.LinkEvent, error) {
	var ev events.LinkEvent
	_, err := i.links.LastJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("issuer: read issued event: %w", err)
	}
	return &ev, nil
}

// writeScope makes st the scope's state if the scope is still at seq
// (0: still empty); bus.ErrConflict if another writer got there first.
func (i *Issuer) writeScope(ctx context.Context, sp linkSpec, seq uint64, st link.State) error {
	_, err := i.writeState(ctx, sp.scope, seq, &st)
	return err
}

// writeState makes st the state of scope if the scope is still at seq (0:
// still empty) and returns the new sequence; bus.ErrConflict if another
// writer got there first.
func (i *Issuer) writeState(ctx context.Context, scope string, seq uint64, st *link.State) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("issuer: encode scope state: %w", err)
	}
	next, err := bus.PublishIfSeq(ctx, i.js, scope, data, seq)
	if err != nil {
		return 0, fmt.Errorf("issuer: write scope: %w", err)
	}
	return next, nil
}

// publishIssued publishes links.<link_id>.issued once (Nats-Msg-Id
// issued-<link_id>).
func (i *Issuer) publishIssued(ctx context.Context, d *delivery, sp linkSpec, linkID string, w window) error {
	client := sp.client
	ev := events.LinkEvent{
		EventID: "issued-" + linkID, Type: events.TypeIssued, LinkID: linkID,
		PracticeID: d.env.PracticeID, ClientID: sp.client.ID, Purpose: sp.purpose, At: w.at,
		CauseEventID: d.env.EventID, Client: &client, ReturnTo: sp.returnTo, ShareID: sp.shareID,
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
		Kid: kid, Purpose: sp.purpose, MintEventID: d.env.EventID,
		ValidFrom: w.validFrom, ExpiresAt: w.expiresAt, Document: sp.document,
		CauseEventID: d.env.EventID, At: w.at,
	}
	return mail.Queue(ctx, i.js, &cmd)
}
