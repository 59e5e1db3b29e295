package issuer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

// TestReminderScheduleFiresEndToEnd lets the server fire real schedules
// (wall clock): an appointment 72 hours and 3 seconds away with a 72h
// reminder gets, about 3 seconds later, a reminder email carrying the same
// link as its confirmation; the same schedule of a canceled appointment and
// the old schedule of a rescheduled one never fire. The mailer sends into
// its local sink, so the emails themselves are checked too (including the
// in-person confirmation, which has no link).
func TestReminderScheduleFiresEndToEnd(t *testing.T) {
	e := newEnv(t)
	iss, err := issuer.New(issuer.Config{JS: e.js, DB: e.db, Keys: e.keys, Practices: e.dir, Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	e.run(iss)
	sink, err := mailer.NewSink(storetest.MustOpen(t, "mailer"), clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := mailer.New(mailer.Config{JS: e.js, Keys: e.keys, Practices: e.dir, Sender: sink,
		From: "noreply@linkpipe.example", PublicURL: "https://r.example"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	starts := time.Now().Add(72*time.Hour + 3*time.Second)
	e.publish(scheduled("evt-e1", "quin", "ap-e1", starts, true, []string{"72h"}))
	e.publish(scheduled("evt-e2", "quin", "ap-e2", starts, true, []string{"72h"}))
	e.publish(scheduled("evt-e3", "quin", "ap-e3", starts, false, []string{"72h"}))
	e.waitIdle()
	// Before they fire: ap-e2 canceled, ap-e3 moved ten days out.
	e.publish(canceled("evt-e4", "ap-e2"))
	e.publish(rescheduled("evt-e5", "ap-e3", starts.Add(10*24*time.Hour)))
	e.waitIdle()
	// The schedules say "@at" to the second.
	if fireAt := starts.Add(-72 * time.Hour).Truncate(time.Second); !time.Now().Before(fireAt) {
		t.Skip("the machine is too slow: the schedules were due before the cancellation and the reschedule were handled")
	}

	var rem mail.Command
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r := e.mailCmds(mail.KindAppointmentReminder); len(r) > 0 {
			rem = r[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reminder within 15s of its schedule")
		}
		time.Sleep(50 * time.Millisecond)
	}
	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-e1")
	confirm, _ := e.mailCmd(linkID + "-" + mail.KindAppointmentConfirmed)
	wantID := "rem-ap-e1-72h-" + itoa(starts.Unix())
	if rem.CauseEventID != wantID || rem.LinkID != linkID || rem.LinkID != confirm.LinkID || rem.MintEventID != "evt-e1" ||
		rem.Appointment == nil || rem.Appointment.ID != "ap-e1" {
		t.Errorf("reminder %+v, want one for %s carrying %s", rem, wantID, linkID)
	}
	// The schedule is gone once it fired.
	if n := len(e.schedules("ap-e1")); n != 0 {
		t.Errorf("%d schedules left for ap-e1", n)
	}

	// The emails.
	emails := func() map[string]mailer.SinkMessage {
		msgs, err := sink.Messages(0)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]mailer.SinkMessage{}
		for _, m := range msgs {
			out[m.MailID] = m
		}
		return out
	}
	inPerson := e.mailFor(mail.KindAppointmentConfirmed, "evt-e3")
	e.waitFor("the emails", func() bool {
		got := emails()
		_, a := got[rem.MailID]
		_, b := got[confirm.MailID]
		_, c := got[inPerson.MailID]
		return a && b && c
	})
	got := emails()
	remEmail, confEmail := got[rem.MailID], got[confirm.MailID]
	if !strings.HasPrefix(remEmail.Subject, "Reminder") || len(remEmail.Links) != 1 || len(confEmail.Links) != 1 ||
		remEmail.Links[0] != confEmail.Links[0] || !strings.HasPrefix(remEmail.Links[0], "https://r.example/l/") {
		t.Errorf("reminder email %q links %v; confirmation links %v", remEmail.Subject, remEmail.Links, confEmail.Links)
	}
	if ip := got[inPerson.MailID]; len(ip.Links) != 0 || !strings.Contains(ip.Text, "in person") {
		t.Errorf("in-person confirmation: links %v, text %q", ip.Links, ip.Text)
	}

	// The canceled and the moved appointments' schedules were due at the
	// same second: give them time, then check nothing else fired.
	time.Sleep(1500 * time.Millisecond)
	e.waitIdle()
	if r := e.mailCmds(mail.KindAppointmentReminder); len(r) != 1 {
		t.Errorf("%d reminders, want 1: %+v", len(r), r)
	}
	if _, fired := e.count(bus.NewReader(e.js, bus.StreamActions), events.SubjectAppointmentReminder); fired != 1 {
		t.Errorf("%d reminder actions fired, want 1", fired)
	}
	e.wantSchedules("ap-e3", starts.Add(10*24*time.Hour), map[string]time.Time{"72h": starts.Add(7 * 24 * time.Hour)})
}
