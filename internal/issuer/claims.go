package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
)

// ErrEventReused: an action reuses the event id of another action (another
// subject, another client or another appointment). Its link would be
// minted from an id another client's link was minted from, so it is
// dead-lettered, on every replica, whatever the replica's local ledger
// holds.
var ErrEventReused = errors.New("event id already used by another action")

// Claims.
//
// The first handling of an action claims its event id: a create-only put
// of key <practice>.<hash of event id> in the KV bucket
// bus.BucketEventClaims, whose value names what the action is about (its
// subject and its client or appointment). The bucket keeps every claim for
// good and is shared by every replica, so a redelivery, a re-publish after
// the de-duplication window or a replica with an empty data dir finds the
// claim; the same owner proceeds (idempotent), any other owner is
// ErrEventReused. Claims are made before any state is written.

// claimKey is the bucket key of an event id: event ids may hold
// characters ('-' aside) a key may not start with, and may be 64 long.
func claimKey(practiceID, eventID string) string {
	sum := sha256.Sum256([]byte("linkpipe/claim/v1\x00" + eventID))
	return practiceID + "." + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// ownerOf is what an action is about: its subject and its client, or its
// appointment for the actions that name no client. "" for an action that
// mints nothing and needs no claim.
func ownerOf(subject string, a events.Action) string {
	switch a := a.(type) {
	case *events.SigninRequested:
		return subject + " client " + a.Client.ID
	case *events.DocumentShared:
		return subject + " client " + a.Client.ID + " share " + a.ShareID
	case *events.AppointmentScheduled:
		return subject + " client " + a.Client.ID + " appointment " + a.Appointment.ID
	case *events.AppointmentRescheduled:
		return subject + " appointment " + a.Appointment.ID
	case *events.AppointmentCanceled:
		return subject + " appointment " + a.Appointment.ID
	case *events.AppointmentReminder:
		return subject + " appointment " + a.Appointment.ID
	case *events.ClientLinksRevoked:
		return subject + " client " + a.Client.ID
	case *events.RenewalRequested:
		return subject + " link " + a.LinkID
	}
	return ""
}

// claim makes d's event id d's, or finds it already is; poison
// ErrEventReused if another action holds it.
func (i *Issuer) claim(ctx context.Context, d *delivery) error {
	owner := ownerOf(d.msg.Subject(), d.action)
	if owner == "" {
		return nil
	}
	kv, err := i.claims.KV(ctx)
	if err != nil {
		return err
	}
	key := claimKey(d.env.PracticeID, d.env.EventID)
	if _, err := kv.Create(ctx, key, []byte(owner)); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("issuer: claim event id: %w", err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("issuer: read claim of event id: %w", err)
	}
	if got := string(e.Value()); got != owner {
		return poison(fmt.Errorf("%w: event %s of practice %s was first used by %q, not %q; publish this action with a new event id",
			ErrEventReused, d.env.EventID, d.env.PracticeID, got, owner))
	}
	return nil
}

// claimed wraps a handler so that its action claims its event id first.
func (i *Issuer) claimed(h handlerFunc) handlerFunc {
	return func(ctx context.Context, d *delivery) (result, error) {
		if err := i.claim(ctx, d); err != nil {
			return result{}, err
		}
		return h(ctx, d)
	}
}
