package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Reminders are JetStream message schedules on ACTIONS (server 2.12+), one
// per subject actions.schedule.reminder.<practice>.<appointment>.<offset>:
// "@at starts_at - offset", target actions.appointment.reminder, payload an
// events.AppointmentReminder with event id
// rem-<appointment>-<offset>-<starts_at unix> (hashed when longer than an
// id may be) and the starts_at it was planned for. The server publishes the
// payload on the target at that time (the issuer handles it like a
// practice's reminder) and removes the schedule. Publishing a schedule on a
// subject replaces the one there (the server rolls the subject up), so
// planning is idempotent; a schedule carries Nats-TTL "never" so that the
// stream's MaxAge (7 days) cannot drop it before it fires.
//
// A plan is computed from the appointment's scope state: every offset of
// the state whose fire time is after now (offsets already past are
// skipped), none for a canceled appointment. Applying it removes (purges)
// the appointment's schedule subjects the plan does not name, then
// publishes the plan's. A crash midway is repaired by the action's
// redelivery, which plans again.

// reminderTTL keeps schedules past the stream's MaxAge.
const reminderTTL = "never"

// planAttempts bounds re-planning while the appointment keeps changing.
const planAttempts = 4

// scheduleFilter matches every reminder schedule of an appointment.
func scheduleFilter(practiceID, apptID string) string {
	return bus.ReminderSchedulePrefix + practiceID + "." + apptID + ".>"
}

// plannedReminder is one reminder schedule.
type plannedReminder struct {
	subject string
	at      time.Time
	ev      *events.AppointmentReminder
}

// reminderPlan returns the schedules an appointment's state calls for.
func reminderPlan(practiceID, apptID string, st *scope.State, now time.Time) []plannedReminder {
	if st.CanceledAt != nil || st.Appointment == nil || st.Appointment.StartsAt == nil {
		return nil
	}
	starts := *st.Appointment.StartsAt
	var plan []plannedReminder
	for _, s := range st.Reminders {
		off, err := time.ParseDuration(s)
		if err != nil || off <= 0 {
			continue
		}
		at := starts.Add(-off)
		if !at.After(now) {
			continue // its time has passed
		}
		name := compactDuration(off)
		startsAt := starts
		plan = append(plan, plannedReminder{
			subject: bus.ReminderSchedulePrefix + practiceID + "." + apptID + "." + name,
			at:      at,
			ev: &events.AppointmentReminder{
				Envelope:    events.Envelope{EventID: reminderEventID(apptID, name, starts), PracticeID: practiceID},
				Appointment: events.Appointment{ID: apptID, StartsAt: &startsAt},
			},
		})
	}
	return plan
}

// reminderEventID is rem-<appointment>-<offset>-<starts_at unix>, or
// rem-<hash of that> when it would not be a valid id (longer than 64).
func reminderEventID(apptID, offset string, starts time.Time) string {
	id := "rem-" + apptID + "-" + offset + "-" + strconv.FormatInt(starts.Unix(), 10)
	if events.ValidID(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "rem-" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// planReminders brings the appointment's schedules in line with its scope's
// current state. If the scope changed while it did so (a concurrent
// reschedule), it plans again from the newer state, so whichever planner
// finishes last leaves the newest state's plan.
func (i *Issuer) planReminders(ctx context.Context, practiceID, apptID, subject string) error {
	for range planAttempts {
		cur, err := i.scopes.Get(ctx, subject)
		if err != nil {
			return fmt.Errorf("issuer: %w", err)
		}
		if err := i.applyPlan(ctx, practiceID, apptID, reminderPlan(practiceID, apptID, &cur.State, i.clock.Now())); err != nil {
			return err
		}
		after, err := i.scopes.Get(ctx, subject)
		if err != nil {
			return fmt.Errorf("issuer: %w", err)
		}
		if after.Seq == cur.Seq {
			return nil
		}
	}
	i.log.Warn("appointment kept changing while its reminders were planned; the newest change plans them", keyScope, subject)
	return nil
}

// applyPlan removes the appointment's schedules the plan does not name and
// publishes (replaces) the plan's.
func (i *Issuer) applyPlan(ctx context.Context, practiceID, apptID string, plan []plannedReminder) error {
	have, err := i.actions.Subjects(ctx, scheduleFilter(practiceID, apptID))
	if err != nil {
		return fmt.Errorf("issuer: list reminder schedules: %w", err)
	}
	want := make(map[string]bool, len(plan))
	for _, r := range plan {
		want[r.subject] = true
	}
	for subj := range have {
		if !want[subj] {
			if err := i.purgeSchedules(ctx, subj); err != nil {
				return err
			}
		}
	}
	for _, r := range plan {
		if err := i.publishSchedule(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// publishSchedule publishes (or replaces) one reminder schedule. It sets no
// Nats-Msg-Id: a re-plan within the de-duplication window must not be
// dropped.
func (i *Issuer) publishSchedule(ctx context.Context, r plannedReminder) error {
	data, err := events.Marshal(r.ev)
	if err != nil {
		return fmt.Errorf("issuer: reminder payload: %w", err)
	}
	msg := &nats.Msg{Subject: r.subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgTTLHeader, reminderTTL)
	if _, err := i.js.PublishMsg(ctx, msg, jetstream.WithScheduleAt(r.at),
		jetstream.WithScheduleTarget(events.SubjectAppointmentReminder)); err != nil {
		return fmt.Errorf("issuer: schedule reminder %s: %w", r.subject, err)
	}
	i.m.schedules.WithLabelValues("planned").Inc()
	return nil
}

// dropReminders removes every reminder schedule of an appointment.
func (i *Issuer) dropReminders(ctx context.Context, practiceID, apptID string) error {
	return i.purgeSchedules(ctx, scheduleFilter(practiceID, apptID))
}

// purgeSchedules purges the schedule subjects matching filter from ACTIONS;
// a purged schedule never fires.
func (i *Issuer) purgeSchedules(ctx context.Context, filter string) error {
	s, err := i.actions.Stream(ctx)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return fmt.Errorf("issuer: remove reminder schedules %s: %w", filter, err)
	}
	i.m.schedules.WithLabelValues("purged").Inc()
	return nil
}
