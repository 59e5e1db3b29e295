package issuer_test

import (
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// tA is the fake clock of the appointment tests. It is years ahead of the
// wall clock, so the server never fires the reminder schedules these tests
// plan (it fires them by the wall clock); the end-to-end test that wants a
// schedule to fire uses the wall clock instead.
var tA = time.Date(2031, 5, 5, 9, 0, 0, 0, time.UTC)

const apptLen = 50 * time.Minute

// newApptEnv is newEnv with the clock at tA and the issuer running.
func newApptEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.clk.Set(tA)
	e.start()
	return e
}

func tp(t time.Time) *time.Time { return &t }

// scheduled is a scheduled action of practice acme; reminders nil means
// the practice's defaults.
func scheduled(eventID, client, apptID string, starts time.Time, tele bool, reminders []string) *events.AppointmentScheduled {
	return &events.AppointmentScheduled{
		Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Client:   events.Client{ID: client, Email: client + "@example.com", Name: "Pat " + client},
		Appointment: events.Appointment{ID: apptID, StartsAt: tp(starts), EndsAt: tp(starts.Add(apptLen)),
			Telehealth: tele, ClinicianName: "Dr. Lee", Timezone: "America/Chicago"},
		Reminders: reminders,
	}
}

func rescheduled(eventID, apptID string, starts time.Time) *events.AppointmentRescheduled {
	return &events.AppointmentRescheduled{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Appointment: events.Appointment{ID: apptID, StartsAt: tp(starts), EndsAt: tp(starts.Add(apptLen))}}
}

func canceled(eventID, apptID string) *events.AppointmentCanceled {
	return &events.AppointmentCanceled{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Appointment: events.Appointment{ID: apptID}}
}

func reminder(eventID, apptID string, starts *time.Time) *events.AppointmentReminder {
	return &events.AppointmentReminder{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Appointment: events.Appointment{ID: apptID, StartsAt: starts}}
}

func revocation(eventID, client, reason string) *events.ClientLinksRevoked {
	return &events.ClientLinksRevoked{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Client: events.Client{ID: client}, Reason: reason}
}

// mailCmds returns every queued mail command of a kind ("" any), ordered
// by mail id.
func (e *env) mailCmds(kind string) []mail.Command {
	e.t.Helper()
	subs, err := e.mail.Subjects(e.ctx, bus.MailCommandPrefix+">")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []mail.Command
	for subj := range subs {
		var cmd mail.Command
		if _, err := e.mail.LastJSON(e.ctx, subj, &cmd); err != nil {
			e.t.Fatal(err)
		}
		if kind == "" || cmd.Kind == kind {
			out = append(out, cmd)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].MailID < out[b].MailID })
	return out
}

// mailFor returns the one mail command of kind caused by eventID.
func (e *env) mailFor(kind, eventID string) mail.Command {
	e.t.Helper()
	var found []mail.Command
	for _, c := range e.mailCmds(kind) {
		if c.CauseEventID == eventID {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		e.t.Fatalf("%d %s mail commands caused by %s, want 1: %+v", len(found), kind, eventID, found)
	}
	return found[0]
}

// sched is a reminder schedule as stored on ACTIONS.
type sched struct {
	pattern, target, ttl string
	rem                  events.AppointmentReminder
}

// schedules returns an appointment's reminder schedules by offset.
func (e *env) schedules(apptID string) map[string]sched {
	e.t.Helper()
	r := bus.NewReader(e.js, bus.StreamActions)
	prefix := bus.ReminderSchedulePrefix + "acme." + apptID + "."
	subs, err := r.Subjects(e.ctx, prefix+">")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]sched{}
	for subj, n := range subs {
		if n != 1 {
			e.t.Errorf("%s holds %d messages, want 1", subj, n)
		}
		m, err := r.Last(e.ctx, subj)
		if err != nil {
			e.t.Fatal(err)
		}
		s := sched{pattern: m.Header.Get(jetstream.ScheduleHeader), target: m.Header.Get(jetstream.ScheduleTargetHeader),
			ttl: m.Header.Get(jetstream.MsgTTLHeader)}
		if err := json.Unmarshal(m.Data, &s.rem); err != nil {
			e.t.Fatal(err)
		}
		out[subj[len(prefix):]] = s
	}
	return out
}

// wantSchedules checks an appointment's schedules: offset -> fire time.
func (e *env) wantSchedules(apptID string, starts time.Time, want map[string]time.Time) {
	e.t.Helper()
	got := e.schedules(apptID)
	if len(got) != len(want) {
		e.t.Errorf("%s: schedules %v, want offsets %v", apptID, keys(got), want)
	}
	for off, at := range want {
		s, ok := got[off]
		if !ok {
			e.t.Errorf("%s: no %s schedule", apptID, off)
			continue
		}
		if s.pattern != "@at "+at.UTC().Format(time.RFC3339) || s.target != events.SubjectAppointmentReminder || s.ttl != "never" {
			e.t.Errorf("%s %s: schedule %q target %q ttl %q, want @at %s", apptID, off, s.pattern, s.target, s.ttl, at.UTC().Format(time.RFC3339))
		}
		wantID := "rem-" + apptID + "-" + off + "-" + itoa(starts.Unix())
		if s.rem.EventID != wantID || s.rem.PracticeID != "acme" || s.rem.Appointment.ID != apptID ||
			s.rem.Appointment.StartsAt == nil || !s.rem.Appointment.StartsAt.Equal(starts) || s.rem.Validate() != nil {
			e.t.Errorf("%s %s: payload %+v, want event id %s starting %s", apptID, off, s.rem, wantID, starts)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// scopeCount is the number of states a scope holds.
func (e *env) scopeCount(subj string) uint64 {
	e.t.Helper()
	_, n := e.count(e.scopesR, subj)
	return n
}

// issuedCount is the number of issued events.
func (e *env) issuedCount() int {
	e.t.Helper()
	n, _ := e.count(e.links, "links.*.issued")
	return n
}

// outcomes returns the issuer's action counter for a subject and outcome.
func (e *env) outcome(subject, outcome string) float64 {
	e.t.Helper()
	return e.metric(e.reg, "linkpipe_issuer_actions_total", map[string]string{"subject": subject, "outcome": outcome})
}

// hasIssued reports whether a link has an issued event.
func (e *env) hasIssued(linkID string) bool {
	e.t.Helper()
	_, err := e.links.Last(e.ctx, events.LinkSubject(linkID, events.TypeIssued))
	if errors.Is(err, bus.ErrNotFound) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return true
}

// verdict evaluates a link against its scope's current state at now.
func (e *env) verdict(subject, linkID string, now time.Time) scope.Verdict {
	e.t.Helper()
	st, _ := e.scopeState(subject)
	return st.Verdict(linkID, now)
}
