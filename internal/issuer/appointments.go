package issuer

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Appointment scopes.
//
// An appointment's scope is scope.<practice>.<client>.appt.<appointment>. Its
// state holds the appointment's current details, the client its emails go
// to and its reminder offsets, so that the later actions, which name only
// the appointment, find everything there; a telehealth appointment's state
// also names its link (purpose telehealth, usable any number of times from
// its issue until ends_at + the practice's telehealth grace). An in-person
// appointment's state has no link (purpose "appointment").
//
// One replica handles the actions of one appointment in stream order (in
// lanes, see the end of this file); several replicas may still handle them
// out of order. The state's ChangeSeq is the ACTIONS sequence
// of the newest appointment action applied; an older one handled late is a
// no-op ("stale"), except a cancellation, which still applies unless a
// newer scheduled action re-booked the appointment. An action that finds no
// scope for its appointment is retried a few times (its scheduled action
// may be in flight), then dead-lettered.

// purposeAppointment is the purpose of an in-person appointment's scope
// state: the scope holds the appointment, and no link.
const purposeAppointment = "appointment"

// unknownApptDeliveries is how many deliveries an action naming an unknown
// appointment gets (backoff 100ms, 200ms, 400ms, 800ms in between) before
// it is dead-lettered.
const unknownApptDeliveries = 5

// locateAppointment returns the scope subject of an appointment, found by
// listing SCOPES subjects scope.<practice>.*.appt.<appointment>.
func (i *Issuer) locateAppointment(ctx context.Context, d *delivery, apptID string) (string, error) {
	p := d.env.PracticeID
	subs, err := i.scopes.ListAppointment(ctx, p, apptID)
	if err != nil {
		return "", fmt.Errorf("issuer: find appointment: %w", err)
	}
	switch len(subs) {
	case 1:
		return subs[0], nil
	case 0:
		err := fmt.Errorf("%w: practice %s has no appointment %s (no scope %s): it was never scheduled, or its scheduled action was refused",
			ErrUnknownAppointment, p, apptID, scope.AppointmentFilter(p, apptID))
		if d.delivered < unknownApptDeliveries {
			return "", fmt.Errorf("issuer: %w; retrying in case its scheduled action is being handled", err)
		}
		return "", poison(err)
	}
	return "", poison(fmt.Errorf("%w: appointment %s of practice %s is held by several clients' scopes: %s",
		ErrAppointmentClient, apptID, p, strings.Join(subs, ", ")))
}

// checkOwner refuses an appointment id that another client's scope holds.
func (i *Issuer) checkOwner(ctx context.Context, practiceID, apptID, subject string) error {
	subs, err := i.scopes.ListAppointment(ctx, practiceID, apptID)
	if err != nil {
		return fmt.Errorf("issuer: find appointment: %w", err)
	}
	for _, s := range subs {
		if s != subject {
			return poison(fmt.Errorf("%w: appointment %s of practice %s is client %s's (scope %s); cancel it and schedule the new client's appointment under a new id",
				ErrAppointmentClient, apptID, practiceID, clientOf(s), s))
		}
	}
	return nil
}

// reminderOffsets returns the offsets an appointment is scheduled with: the
// action's (empty: none), else the practice policy's; canonical ("72h"),
// without duplicates, longest first.
func reminderOffsets(a *events.AppointmentScheduled, pol link.Policy) []string {
	ds := pol.Reminders
	if a.Reminders != nil {
		ds, _ = events.ParseReminders("reminders", a.Reminders) // validated by Decode
	}
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	ds = slices.Compact(ds)
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, compactDuration(d))
	}
	return out
}

// compactDuration is d as a Go duration without zero units: "72h",
// "1h30m", "45m".
func compactDuration(d time.Duration) string {
	s := d.String() // "72h0m0s", "1h30m0s", "45m0s", "1m30s"
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func clonedAppt(a events.Appointment) *events.Appointment {
	if a.StartsAt != nil {
		t := *a.StartsAt
		a.StartsAt = &t
	}
	if a.EndsAt != nil {
		t := *a.EndsAt
		a.EndsAt = &t
	}
	return &a
}

// appointmentScheduled handles actions.appointment.scheduled.
//
// A first scheduled action creates the appointment's scope. Telehealth: a
// link minted from the event id (purpose telehealth), current from now
// (the waiting room works before the appointment) until ends_at + the
// practice's telehealth grace, usable any number of times; its issued
// event; a confirmation email carrying it (mail id
// <link_id>-appointment_confirmed). In person: the scope without a link and
// a confirmation email without one (mail id per event). Reminders are
// planned for the action's offsets, else the practice's.
//
// A later scheduled action (another event id) for the same appointment:
//   - live appointment, same kind (telehealth or not): the link is kept; the
//     window, details, client address and reminders are replaced (as a
//     reschedule would), reminders are re-planned, and a confirmation with
//     the current details and the same link is sent;
//   - canceled or revoked appointment, or one that changed between in person
//     and telehealth: it is booked afresh, as a first scheduled action would
//     (a new link replaces the old one, which then refuses as superseded);
//     an appointment revoked by a revocation newer than this action is only
//     updated (it stays revoked);
//   - an appointment id another client's scope holds: dead letter.
func (i *Issuer) appointmentScheduled(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.AppointmentScheduled)
	p, apptID := a.PracticeID, a.Appointment.ID
	subject := scope.Appointment(p, a.Client.ID, apptID)
	log := d.log.With(keyAppt, apptID, keyClientID, a.Client.ID)
	if err := i.checkOwner(ctx, p, apptID, subject); err != nil {
		return result{}, err
	}
	pol := i.practices.Get(p).Policy
	now := i.clock.Now()
	kid := i.keys.CurrentKid()
	linkID := ""
	if a.Appointment.Telehealth {
		var err error
		if linkID, err = i.mintID(kid, events.PurposeTelehealth, subject, a.EventID); err != nil {
			return result{}, err
		}
	}
	reminders := reminderOffsets(a, pol)
	expires := a.Appointment.EndsAt.Add(pol.TelehealthGrace)
	client := a.Client
	book := func(prev *scope.State) *scope.State {
		st := &scope.State{
			Change: scope.ChangeIssued, Purpose: purposeAppointment, ValidFrom: now, ExpiresAt: expires,
			EventID: a.EventID, ActionSeq: d.seq, ChangeSeq: d.seq, At: now,
			Appointment: clonedAppt(a.Appointment), Client: &client, Reminders: reminders,
		}
		if linkID != "" {
			st.LinkID, st.Purpose, st.Kid = linkID, events.PurposeTelehealth, kid
		}
		if prev != nil && prev.LinkID != "" && prev.LinkID != linkID {
			st.Supersedes = prev.LinkID
		}
		return st
	}
	var h history
	cur, s, err := i.mutate(ctx, subject, func(cur *scope.Entry) (step, error) {
		ord, err := i.order(ctx, d, cur, scope.ChangeIssued, &h)
		if err != nil {
			return step{}, err
		}
		if s, ok := alreadyApplied(ord); ok {
			return s, nil
		}
		if ord == ordOlder {
			return step{outcome: outcomeStale}, nil
		}
		if !cur.Found() {
			return step{next: book(nil), outcome: outcomeIssued, effects: true}, nil
		}
		prev := cur.State
		revokedLater := prev.RevokedAt != nil && prev.ActionSeq > d.seq
		sameKind := (prev.Purpose == events.PurposeTelehealth) == a.Appointment.Telehealth
		if !revokedLater && (prev.CanceledAt != nil || prev.RevokedAt != nil || !sameKind) {
			return step{next: book(&prev), outcome: outcomeIssued, effects: true}, nil
		}
		st := prev
		st.Change, st.ExpiresAt = scope.ChangeIssued, expires
		st.Appointment, st.Client, st.Reminders = clonedAppt(a.Appointment), &client, reminders
		st.EventID, st.ChangeSeq, st.At = a.EventID, d.seq, now
		return step{next: &st, outcome: outcomeUpdated, effects: true}, nil
	})
	if err != nil {
		return result{}, err
	}
	st := &cur.State
	ours := linkID != "" && cur.Found() && st.LinkID == linkID
	if ours {
		// The link is issued once its issued event exists; published only
		// after the scope holds it, and completed by any redelivery.
		if err := i.ensureApptIssued(ctx, d, st, linkID, apptID); err != nil {
			return result{}, err
		}
	}
	if ours && s.effects && st.Live(linkID) {
		// A revocation newer than this action, handled before the scope
		// held the link, revokes it now; the confirmation carries no link.
		revoked, err := i.enforceRevocation(ctx, subject, d.seq)
		if err != nil {
			return result{}, err
		}
		if revoked {
			if cur, err = i.scopes.GetFromLeader(ctx, subject); err != nil {
				return result{}, fmt.Errorf("issuer: %w", err)
			}
			st, s.outcome = &cur.State, outcomeBornRevoked
		}
	}
	if s.effects {
		mailID := mail.EventMailID(p, a.EventID, mail.KindAppointmentConfirmed)
		if ours && st.RevokedAt == nil {
			mailID = mail.LinkMailID(linkID, mail.KindAppointmentConfirmed)
		}
		mint := ""
		if ours {
			mint = a.EventID
		}
		if err := i.queueApptMail(ctx, d, &cur, mail.KindAppointmentConfirmed, mailID, mint, now); err != nil {
			return result{}, err
		}
		if err := i.planReminders(ctx, p, apptID, subject); err != nil {
			return result{}, err
		}
	}
	log.Debug("appointment scheduled", keyOutcome, s.outcome, keyLinkID, st.LinkID, keySupersedes, st.Supersedes)
	res := result{outcome: s.outcome}
	if ours {
		res.linkID = linkID
	}
	return res, nil
}

// ensureApptIssued publishes the telehealth link's issued event unless it
// exists.
func (i *Issuer) ensureApptIssued(ctx context.Context, d *delivery, st *scope.State, linkID, apptID string) error {
	ev, err := i.readIssued(ctx, linkID)
	if err != nil || ev != nil {
		return err
	}
	var client events.Client
	if st.Client != nil {
		client = *st.Client
	}
	return i.publishIssued(ctx, d, linkSpec{purpose: events.PurposeTelehealth, client: client, appointmentID: apptID},
		linkID, window{validFrom: st.ValidFrom, expiresAt: st.ExpiresAt, at: st.At, supersedes: st.Supersedes})
}

// queueApptMail queues an appointment email built from the scope state: to
// the state's client, with its current appointment details, carrying the
// current link if there is one that works (not revoked; a cancellation
// email names the link for its lifecycle events but does not show it).
func (i *Issuer) queueApptMail(ctx context.Context, d *delivery, cur *scope.Entry, kind, mailID, mint string, now time.Time) error {
	st := &cur.State
	if st.Client == nil || st.Appointment == nil {
		return poison(fmt.Errorf("issuer: appointment scope state without client or appointment (event %s)", st.EventID))
	}
	cmd := &mail.Command{
		MailID: mailID, Kind: kind, PracticeID: d.env.PracticeID, To: *st.Client,
		Appointment: clonedAppt(*st.Appointment), CauseEventID: d.env.EventID, At: now, ActionAt: d.at,
	}
	if st.LinkID != "" && st.RevokedAt == nil && (st.CanceledAt == nil || kind == mail.KindAppointmentCanceled) {
		kid, mintEventID, err := i.linkRef(ctx, cur.Subject, st, mint)
		if err != nil {
			return err
		}
		cmd.LinkID, cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID = st.LinkID, kid, st.Purpose, cur.Subject, mintEventID
		// The appointment's client details as the scope has them now are
		// the link's address on record.
		if err := i.recordAddress(ctx, d, st.LinkID, *st.Client); err != nil {
			return err
		}
		cmd.ValidFrom, cmd.ExpiresAt = st.ValidFrom, st.ExpiresAt
	}
	return mail.Queue(ctx, i.js, cmd)
}

// apptChange is what one action that names only its appointment
// (rescheduled, canceled) does to the appointment's scope.
type apptChange struct {
	// change is the scope.Change* the action writes.
	change string
	// verb names it in the log line ("rescheduled", "canceled").
	verb string
	// decide chooses the step on the scope's current state when the
	// action is not already applied (ord is ordNew or ordOlder).
	decide func(cur *scope.Entry, ord ordering, h *history) (step, error)
	// effects sends the action's email and re-plans or drops reminders;
	// it runs when the step says they are due.
	effects func(ctx context.Context, cur *scope.Entry) error
}

// changeAppointment is the one skeleton of the appointment changes: locate
// the appointment's scope, place the action relative to its state
// (already applied: finish its side effects, or do nothing), let the
// change decide and write conditionally, then run the side effects.
func (i *Issuer) changeAppointment(ctx context.Context, d *delivery, apptID string, c apptChange) (result, error) {
	log := d.log.With(keyAppt, apptID)
	subject, err := i.locateAppointment(ctx, d, apptID)
	if err != nil {
		return result{}, err
	}
	var h history
	cur, s, err := i.mutate(ctx, subject, func(cur *scope.Entry) (step, error) {
		if !cur.Found() {
			return step{}, poison(fmt.Errorf("%w: scope %s is empty", ErrUnknownAppointment, subject))
		}
		ord, err := i.order(ctx, d, cur, c.change, &h)
		if err != nil {
			return step{}, err
		}
		if s, ok := alreadyApplied(ord); ok {
			return s, nil
		}
		return c.decide(cur, ord, &h)
	})
	if err != nil {
		return result{}, err
	}
	log = log.With(keyClientID, clientOf(subject), keyLinkID, cur.State.LinkID)
	if s.outcome == outcomeIgnoreCanceled {
		log.Warn("appointment "+c.verb+" ignored: it is canceled", keyOutcome, s.outcome)
		return result{outcome: s.outcome}, nil
	}
	if s.effects {
		if err := c.effects(ctx, &cur); err != nil {
			return result{}, err
		}
	}
	log.Debug("appointment "+c.verb, keyOutcome, s.outcome)
	return result{outcome: s.outcome, linkID: cur.State.LinkID}, nil
}

// clientOf returns the client id of a scope subject ("" if it is not
// one).
func clientOf(subject string) string {
	s, err := scope.Parse(subject)
	if err != nil {
		return ""
	}
	return s.Client
}

// appointmentRescheduled handles actions.appointment.rescheduled: the same
// link (if any), its window moved to end at the new ends_at + the
// practice's grace, effective at once (a link that had expired works again
// if the new end is in the future); a "your appointment moved" email with
// the link (mail id per event); reminders re-planned. A reschedule of a
// canceled appointment changes nothing (logged, counted as
// ignored_canceled). Only the times change: other fields of the action's
// appointment are ignored.
func (i *Issuer) appointmentRescheduled(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.AppointmentRescheduled)
	p, apptID := a.PracticeID, a.Appointment.ID
	grace := i.practices.Get(p).Policy.TelehealthGrace
	now := i.clock.Now()
	return i.changeAppointment(ctx, d, apptID, apptChange{
		change: scope.ChangeRescheduled, verb: "rescheduled",
		decide: func(cur *scope.Entry, ord ordering, _ *history) (step, error) {
			switch {
			case ord == ordOlder:
				return step{outcome: outcomeStale}, nil
			case cur.State.CanceledAt != nil:
				return step{outcome: outcomeIgnoreCanceled}, nil
			}
			st := cur.State
			appt := events.Appointment{ID: apptID}
			if st.Appointment != nil {
				appt = *st.Appointment
			}
			appt.StartsAt, appt.EndsAt = a.Appointment.StartsAt, a.Appointment.EndsAt
			st.Change, st.Appointment = scope.ChangeRescheduled, clonedAppt(appt)
			st.ExpiresAt = a.Appointment.EndsAt.Add(grace)
			st.EventID, st.ChangeSeq, st.At = a.EventID, d.seq, now
			return step{next: &st, outcome: outcomeRescheduled, effects: true}, nil
		},
		effects: func(ctx context.Context, cur *scope.Entry) error {
			mailID := mail.EventMailID(p, a.EventID, mail.KindAppointmentRescheduled)
			if err := i.queueApptMail(ctx, d, cur, mail.KindAppointmentRescheduled, mailID, "", now); err != nil {
				return err
			}
			return i.planReminders(ctx, p, apptID, cur.Subject)
		},
	})
}

// appointmentCanceled handles actions.appointment.canceled: the scope
// records the cancellation (its link then refuses with reason canceled),
// the appointment's reminder schedules are removed and a cancellation email
// is sent (without a link; mail id per event). A cancellation handled after
// a newer reschedule still applies (a reschedule of a canceled appointment
// would have changed nothing); one handled after a newer scheduled action
// (a re-booking) does not.
func (i *Issuer) appointmentCanceled(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.AppointmentCanceled)
	p, apptID := a.PracticeID, a.Appointment.ID
	now := i.clock.Now()
	return i.changeAppointment(ctx, d, apptID, apptChange{
		change: scope.ChangeCanceled, verb: "canceled",
		decide: func(cur *scope.Entry, ord ordering, h *history) (step, error) {
			if cur.State.CanceledAt != nil {
				return step{outcome: outcomeDuplicate}, nil
			}
			if ord == ordOlder {
				applied, err := i.wroteBefore(ctx, cur.Subject, a.EventID, scope.ChangeCanceled, h)
				if err != nil {
					return step{}, err
				}
				if applied {
					return step{outcome: outcomeDuplicate}, nil
				}
				if cur.State.Change == scope.ChangeIssued {
					return step{outcome: outcomeStale}, nil
				}
			}
			st := cur.State
			st.Change, st.CanceledAt = scope.ChangeCanceled, &now
			st.EventID, st.ChangeSeq, st.At = a.EventID, max(st.ChangeSeq, d.seq), now
			return step{next: &st, outcome: outcomeCanceled, effects: true}, nil
		},
		effects: func(ctx context.Context, cur *scope.Entry) error {
			if err := i.dropReminders(ctx, p, apptID); err != nil {
				return err
			}
			mailID := mail.EventMailID(p, a.EventID, mail.KindAppointmentCanceled)
			return i.queueApptMail(ctx, d, cur, mail.KindAppointmentCanceled, mailID, "", now)
		},
	})
}

// appointmentReminder handles actions.appointment.reminder, published by a
// reminder schedule or by a practice system: a reminder email with the
// appointment's current details and current link (mail id per reminder
// event). Not sent (outcome skipped) for a canceled or revoked appointment
// or one that has ended; not sent (outcome stale) when the reminder names a
// starts_at that is no longer the appointment's (a schedule planned before
// a reschedule).
func (i *Issuer) appointmentReminder(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.AppointmentReminder)
	p, apptID := a.PracticeID, a.Appointment.ID
	log := d.log.With(keyAppt, apptID)
	subject, err := i.locateAppointment(ctx, d, apptID)
	if err != nil {
		return result{}, err
	}
	cur, err := i.scopes.Get(ctx, subject)
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	st := &cur.State
	now := i.clock.Now()
	log = log.With(keyClientID, clientOf(subject), keyLinkID, st.LinkID)
	var starts, ends *time.Time
	if st.Appointment != nil {
		starts, ends = st.Appointment.StartsAt, st.Appointment.EndsAt
	}
	why, outcome := "", outcomeSkipped
	switch {
	case !cur.Found():
		return result{}, poison(fmt.Errorf("%w: scope %s is empty", ErrUnknownAppointment, subject))
	case st.CanceledAt != nil:
		why = "the appointment was canceled"
	case st.RevokedAt != nil:
		why = "the appointment's link was revoked"
	case a.Appointment.StartsAt != nil && (starts == nil || !a.Appointment.StartsAt.Equal(*starts)):
		why, outcome = "the reminder was planned for another start time", outcomeStale
	case ends != nil && !now.Before(*ends):
		why = "the appointment is over"
	}
	if why != "" {
		log.Debug("reminder not sent: "+why, keyOutcome, outcome)
		return result{outcome: outcome, linkID: st.LinkID}, nil
	}
	mailID := mail.EventMailID(p, a.EventID, mail.KindAppointmentReminder)
	if err := i.queueApptMail(ctx, d, &cur, mail.KindAppointmentReminder, mailID, "", now); err != nil {
		return result{}, err
	}
	log.Debug("reminder queued", keyMailID, mailID)
	return result{outcome: outcomeReminded, linkID: st.LinkID}, nil
}

// Appointment actions are handled in lanes: the actions of one appointment
// always take the same lane, whose goroutine handles them one at a time in
// the order the consumer delivered them (stream order, redeliveries
// aside). On one replica, then, a cancellation followed by a re-booking, or
// two reschedules, are applied in the order they were published; the
// ChangeSeq rules above cover what several replicas may still reorder.
const (
	apptLanes = 32
	laneQueue = 64
)

// apptLane is the lane of an appointment action (modulo the number of
// lanes, bus.LoopConfig.Lane); ok is false for any other message (and for
// one whose appointment cannot be read: the worker pool dead-letters it).
func apptLane(msg jetstream.Msg) (lane int, ok bool) {
	switch msg.Subject() {
	case events.SubjectAppointmentScheduled, events.SubjectAppointmentRescheduled,
		events.SubjectAppointmentCanceled, events.SubjectAppointmentReminder:
	default:
		return 0, false
	}
	var key struct {
		PracticeID  string `json:"practice_id"`
		Appointment struct {
			ID string `json:"id"`
		} `json:"appointment"`
	}
	if len(msg.Data()) > events.MaxEventSize || json.Unmarshal(msg.Data(), &key) != nil || key.Appointment.ID == "" {
		return 0, false
	}
	h := fnv.New32a()
	h.Write([]byte(key.PracticeID + "\x00" + key.Appointment.ID))
	return int(h.Sum32() % apptLanes), true
}
