package issuer_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

const grace = 30 * time.Minute // the default telehealth grace

func TestScheduledTelehealthIssuesOneMultiUseLink(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	ends := starts.Add(apptLen)
	a := scheduled("evt-ap1", "cleo", "ap-1", starts, true, nil)
	seq := e.publish(a)
	e.waitIdle()

	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-ap1")
	subject := scope.Appointment("acme", "cleo", "ap-1")
	st, _ := e.scopeState(subject)
	want := scope.State{
		Change: scope.ChangeIssued, LinkID: linkID, Purpose: events.PurposeTelehealth, OneTime: false,
		ValidFrom: tA, ExpiresAt: ends.Add(grace), EventID: "evt-ap1", ActionSeq: seq, ChangeSeq: seq, At: tA,
		Reminders: []string{"72h", "24h"}, Appointment: &a.Appointment, Client: &a.Client, Kid: "k1",
	}
	if !statesEqual(st, want) {
		t.Errorf("scope state:\n got %+v\nwant %+v", st, want)
	}
	// Usable from issue (the waiting room) until the end plus grace, any
	// number of times.
	used := st
	used.UsedAt = tp(tA.Add(time.Minute))
	for _, c := range []struct {
		at   time.Time
		st   *scope.State
		want string
	}{
		{tA.Add(time.Minute), &st, ""}, {starts, &used, ""}, {ends.Add(grace - time.Second), &used, ""},
		{ends.Add(grace), &st, events.ReasonExpired},
	} {
		if v := c.st.Verdict(linkID, c.at); v.Reason != c.want {
			t.Errorf("at %s: %+v, want %q", c.at, v, c.want)
		}
	}

	ev := e.issued(linkID)
	if ev.Purpose != events.PurposeTelehealth || ev.AppointmentID != "ap-1" || ev.ClientID != "cleo" || ev.CauseEventID != "evt-ap1" ||
		!ev.ValidFrom.Equal(tA) || !ev.ExpiresAt.Equal(ends.Add(grace)) || scope.OfLink(&ev) != subject {
		t.Errorf("issued event: %+v", ev)
	}

	cmd, _ := e.mailCmd(linkID + "-" + mail.KindAppointmentConfirmed)
	if cmd.Kind != mail.KindAppointmentConfirmed || cmd.LinkID != linkID || cmd.Kid != "k1" || cmd.Purpose != events.PurposeTelehealth ||
		cmd.MintEventID != "evt-ap1" || cmd.To != a.Client || cmd.Appointment == nil || !cmd.Appointment.StartsAt.Equal(starts) ||
		!cmd.ExpiresAt.Equal(ends.Add(grace)) || !cmd.ValidFrom.Equal(tA) || cmd.CauseEventID != "evt-ap1" {
		t.Errorf("confirmation: %+v", cmd)
	}
	token, err := e.keys.Mint(cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := link.ID(token); id != linkID {
		t.Errorf("the mailer would derive %s, want %s", id, linkID)
	}
	msg, err := mail.Render(&cmd, e.dir.Get("acme"), "https://r.example/l/"+token)
	if err != nil || !strings.Contains(msg.Text, "https://r.example/l/"+token) || !strings.HasPrefix(msg.Subject, "Appointment confirmed") {
		t.Errorf("rendered confirmation: %v %+v", err, msg)
	}
	e.wantSchedules("ap-1", starts, map[string]time.Time{"72h": starts.Add(-72 * time.Hour), "24h": starts.Add(-24 * time.Hour)})

	assertOnce := func(stage string) {
		t.Helper()
		if n := len(e.mailCmds("")); n != 1 {
			t.Errorf("%s: %d mail commands, want 1", stage, n)
		}
		if n := e.issuedCount(); n != 1 {
			t.Errorf("%s: %d issued links, want 1", stage, n)
		}
		if n := e.scopeCount(subject); n != 1 {
			t.Errorf("%s: %d scope states, want 1", stage, n)
		}
		if n := len(e.schedules("ap-1")); n != 2 {
			t.Errorf("%s: %d schedules, want 2", stage, n)
		}
	}
	// Re-published after the de-duplication window (another message id).
	e.publishRaw(events.SubjectAppointmentScheduled, "evt-ap1-again", e.marshal(a))
	e.waitIdle()
	assertOnce("same replica")
	// On a replica whose ledger knows nothing.
	e.stop()
	iss2, reg2 := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.run(iss2)
	e.publishRaw(events.SubjectAppointmentScheduled, "evt-ap1-third", e.marshal(a))
	e.waitIdle()
	assertOnce("other replica")
	if got := e.metric(reg2, "linkpipe_issuer_actions_total", map[string]string{"outcome": "duplicate"}); got != 1 {
		t.Errorf("other replica counted %v duplicates, want 1", got)
	}
}

func TestScheduledInPersonHasNoLink(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(50 * time.Hour)
	a := scheduled("evt-ip1", "dina", "ap-ip", starts, false, []string{})
	seq := e.publish(a)
	e.waitIdle()

	subject := scope.Appointment("acme", "dina", "ap-ip")
	st, _ := e.scopeState(subject)
	want := scope.State{
		Change: scope.ChangeIssued, Purpose: "appointment", ValidFrom: tA, ExpiresAt: starts.Add(apptLen + grace),
		EventID: "evt-ip1", ActionSeq: seq, ChangeSeq: seq, At: tA, Appointment: &a.Appointment, Client: &a.Client,
	}
	if !statesEqual(st, want) {
		t.Errorf("scope state:\n got %+v\nwant %+v", st, want)
	}
	if n := e.issuedCount(); n != 0 {
		t.Errorf("%d issued links for an in-person appointment", n)
	}
	cmds := e.mailCmds("")
	if len(cmds) != 1 {
		t.Fatalf("%d mail commands, want 1", len(cmds))
	}
	cmd := cmds[0]
	if cmd.Kind != mail.KindAppointmentConfirmed || cmd.LinkID != "" || cmd.Kid != "" || cmd.MintEventID != "" ||
		cmd.To != a.Client || cmd.Appointment == nil || !cmd.Appointment.StartsAt.Equal(starts) || !events.ValidID(cmd.MailID) {
		t.Errorf("confirmation: %+v", cmd)
	}
	// What the mailer does with it: no link URL.
	msg, err := mail.Render(&cmd, e.dir.Get("acme"), "")
	if err != nil || !strings.Contains(msg.Text, "in person") || strings.Contains(msg.Text, "http") {
		t.Errorf("rendered in-person confirmation: %v %+v", err, msg)
	}
	if n := len(e.schedules("ap-ip")); n != 0 {
		t.Errorf("%d schedules with reminders [], want none", n)
	}
	e.publishRaw(events.SubjectAppointmentScheduled, "evt-ip1-again", e.marshal(a))
	e.waitIdle()
	if n, states := len(e.mailCmds("")), e.scopeCount(subject); n != 1 || states != 1 {
		t.Errorf("after a re-publish: %d mails, %d states; want 1, 1", n, states)
	}
}

func TestSecondScheduledKeepsTheLinkAndRebookingMintsANewOne(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	seq1 := e.publish(scheduled("evt-s1", "eli", "ap-2", starts, true, nil))
	e.waitIdle()
	link1 := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-s1")
	subject := scope.Appointment("acme", "eli", "ap-2")

	// The practice system sends the appointment again with a new time,
	// clinician, address and reminders.
	e.clk.Advance(time.Hour)
	starts2 := starts.Add(24 * time.Hour)
	a2 := scheduled("evt-s2", "eli", "ap-2", starts2, true, []string{"2h"})
	a2.Appointment.ClinicianName = "Dr. New"
	a2.Client.Email = "eli.new@example.com"
	seq2 := e.publish(a2)
	e.waitIdle()
	st, _ := e.scopeState(subject)
	if st.LinkID != link1 || st.Change != scope.ChangeIssued || !st.ValidFrom.Equal(tA) || !st.ExpiresAt.Equal(starts2.Add(apptLen+grace)) ||
		st.ActionSeq != seq1 || st.ChangeSeq != seq2 || st.EventID != "evt-s2" || st.Appointment.ClinicianName != "Dr. New" ||
		st.Client.Email != "eli.new@example.com" || strings.Join(st.Reminders, ",") != "2h" || st.Supersedes != "" {
		t.Errorf("updated scope: %+v", st)
	}
	if e.hasIssued(e.linkIDOf(events.PurposeTelehealth, "acme", "evt-s2")) || e.issuedCount() != 1 {
		t.Error("a second scheduled action minted a link")
	}
	cmd := e.mailFor(mail.KindAppointmentConfirmed, "evt-s2")
	if cmd.LinkID != link1 || cmd.MintEventID != "evt-s1" || cmd.To.Email != "eli.new@example.com" ||
		!cmd.Appointment.StartsAt.Equal(starts2) || !cmd.ExpiresAt.Equal(starts2.Add(apptLen+grace)) {
		t.Errorf("second confirmation: %+v", cmd)
	}
	e.wantSchedules("ap-2", starts2, map[string]time.Time{"2h": starts2.Add(-2 * time.Hour)})

	// Another client cannot take the appointment id.
	seq3 := e.publish(scheduled("evt-s3", "fay", "ap-2", starts, true, nil))
	e.waitIdle()
	if reason := e.deadLetters()[strconv.FormatUint(seq3, 10)]; !strings.Contains(reason, "appointment belongs to another client") || !strings.Contains(reason, "eli") {
		t.Errorf("dead letter reason %q", reason)
	}
	if n := e.scopeCount(scope.Appointment("acme", "fay", "ap-2")); n != 0 {
		t.Errorf("fay got a scope for eli's appointment")
	}

	// Canceled, then booked again: a fresh link replaces the canceled one.
	e.publish(canceled("evt-s-c", "ap-2"))
	e.publish(scheduled("evt-s4", "eli", "ap-2", starts.Add(48*time.Hour), true, nil))
	e.waitIdle()
	link4 := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-s4")
	st, _ = e.scopeState(subject)
	if st.LinkID != link4 || st.Supersedes != link1 || st.CanceledAt != nil || st.Change != scope.ChangeIssued {
		t.Errorf("re-booked scope: %+v", st)
	}
	now := e.clk.Now()
	if v := st.Verdict(link1, now); v.Reason != events.ReasonSuperseded {
		t.Errorf("old link after re-booking: %+v", v)
	}
	if v := st.Verdict(link4, now); !v.OK {
		t.Errorf("new link: %+v", v)
	}
	if !e.hasIssued(link4) {
		t.Error("the re-booking's link has no issued event")
	}
	e.mailCmd(link4 + "-" + mail.KindAppointmentConfirmed)
}

func TestRescheduleMovesTheWindowAndRevivesAnExpiredLink(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	ends := starts.Add(apptLen)
	a := scheduled("evt-r0", "gus", "ap-3", starts, true, nil)
	seq0 := e.publish(a)
	e.waitIdle()
	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-r0")
	subject := scope.Appointment("acme", "gus", "ap-3")

	// The appointment did not take place; the link has expired.
	e.clk.Set(ends.Add(grace + time.Minute))
	if v := e.verdict(subject, linkID, e.clk.Now()); v.Reason != events.ReasonExpired {
		t.Fatalf("before the reschedule: %+v", v)
	}
	now := e.clk.Now()
	starts2 := now.Add(48 * time.Hour)
	ends2 := starts2.Add(apptLen)
	seqR := e.publish(rescheduled("evt-r1", "ap-3", starts2))
	e.waitIdle()

	st, _ := e.scopeState(subject)
	wantAppt := a.Appointment
	wantAppt.StartsAt, wantAppt.EndsAt = &starts2, &ends2
	want := scope.State{
		Change: scope.ChangeRescheduled, LinkID: linkID, Purpose: events.PurposeTelehealth, ValidFrom: tA,
		ExpiresAt: ends2.Add(grace), EventID: "evt-r1", ActionSeq: seq0, ChangeSeq: seqR, At: now,
		Reminders: []string{"72h", "24h"}, Appointment: &wantAppt, Client: &a.Client, Kid: "k1",
	}
	if !statesEqual(st, want) {
		t.Errorf("scope state:\n got %+v\nwant %+v", st, want)
	}
	if v := st.Verdict(linkID, now); !v.OK {
		t.Errorf("the same link after the reschedule: %+v", v)
	}
	if v := st.Verdict(linkID, ends2.Add(grace)); v.Reason != events.ReasonExpired {
		t.Errorf("after the new end plus grace: %+v", v)
	}
	if n := e.issuedCount(); n != 1 {
		t.Errorf("%d issued links, want 1 (no new link)", n)
	}
	cmd := e.mailFor(mail.KindAppointmentRescheduled, "evt-r1")
	if cmd.LinkID != linkID || cmd.MintEventID != "evt-r0" || cmd.Kid != "k1" || !cmd.ExpiresAt.Equal(ends2.Add(grace)) ||
		!cmd.Appointment.StartsAt.Equal(starts2) || !cmd.Appointment.EndsAt.Equal(ends2) || cmd.To != a.Client {
		t.Errorf("moved email: %+v", cmd)
	}
	if msg, err := mail.Render(&cmd, e.dir.Get("acme"), "https://r.example/l/x"); err != nil || !strings.HasPrefix(msg.Subject, "Appointment moved") {
		t.Errorf("rendered moved email: %v %+v", err, msg)
	}
	// 72h before the new start is already past: only the 24h reminder.
	e.wantSchedules("ap-3", starts2, map[string]time.Time{"24h": starts2.Add(-24 * time.Hour)})

	// Idempotent: re-published, nothing new.
	e.publishRaw(events.SubjectAppointmentRescheduled, "evt-r1-again", e.marshal(rescheduled("evt-r1", "ap-3", starts2)))
	e.waitIdle()
	if n, moved := e.scopeCount(subject), len(e.mailCmds(mail.KindAppointmentRescheduled)); n != 2 || moved != 1 {
		t.Errorf("after a re-publish: %d states, %d moved emails; want 2, 1", n, moved)
	}
	// Another reschedule: its own email.
	starts3 := starts2.Add(7 * 24 * time.Hour)
	e.publish(rescheduled("evt-r2", "ap-3", starts3))
	e.waitIdle()
	if moved := e.mailCmds(mail.KindAppointmentRescheduled); len(moved) != 2 || moved[0].MailID == moved[1].MailID {
		t.Errorf("moved emails: %+v", moved)
	}
	e.wantSchedules("ap-3", starts3, map[string]time.Time{"72h": starts3.Add(-72 * time.Hour), "24h": starts3.Add(-24 * time.Hour)})
	if got := e.outcome(events.SubjectAppointmentRescheduled, "rescheduled"); got != 2 {
		t.Errorf("rescheduled count %v, want 2", got)
	}

	// The first reschedule re-published after the second, to a replica
	// whose ledger knows nothing: it must not move the appointment back.
	e.stop()
	iss2, _ := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.run(iss2)
	e.publishRaw(events.SubjectAppointmentRescheduled, "evt-r1-third", e.marshal(rescheduled("evt-r1", "ap-3", starts2)))
	e.waitIdle()
	if st, _ := e.scopeState(subject); !st.Appointment.StartsAt.Equal(starts3) || st.EventID != "evt-r2" {
		t.Errorf("an old reschedule re-published moved the appointment: %+v", st)
	}
	if n := len(e.mailCmds(mail.KindAppointmentRescheduled)); n != 2 {
		t.Errorf("%d moved emails, want 2", n)
	}
	e.wantSchedules("ap-3", starts3, map[string]time.Time{"72h": starts3.Add(-72 * time.Hour), "24h": starts3.Add(-24 * time.Hour)})
}

func TestCancelRevokesTheLinkAndDropsReminders(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	e.publish(scheduled("evt-c0", "hal", "ap-4", starts, true, nil))
	e.waitIdle()
	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-c0")
	subject := scope.Appointment("acme", "hal", "ap-4")
	if n := len(e.schedules("ap-4")); n != 2 {
		t.Fatalf("%d schedules before the cancellation, want 2", n)
	}

	e.clk.Advance(time.Hour)
	now := e.clk.Now()
	seqC := e.publish(canceled("evt-c1", "ap-4"))
	e.waitIdle()
	st, _ := e.scopeState(subject)
	if st.Change != scope.ChangeCanceled || st.CanceledAt == nil || !st.CanceledAt.Equal(now) || st.LinkID != linkID ||
		st.ChangeSeq != seqC || st.EventID != "evt-c1" {
		t.Errorf("canceled scope: %+v", st)
	}
	if v := st.Verdict(linkID, now); v.Reason != events.ReasonCanceled {
		t.Errorf("link after the cancellation: %+v", v)
	}
	if n := len(e.schedules("ap-4")); n != 0 {
		t.Errorf("%d schedules after the cancellation, want none", n)
	}
	cmd := e.mailFor(mail.KindAppointmentCanceled, "evt-c1")
	if cmd.To.ID != "hal" || cmd.Appointment == nil || !cmd.Appointment.StartsAt.Equal(starts) {
		t.Errorf("cancellation email: %+v", cmd)
	}
	// The mailer renders a cancellation without the link.
	if msg, err := mail.Render(&cmd, e.dir.Get("acme"), ""); err != nil || strings.Contains(msg.Text, "http") ||
		!strings.HasPrefix(msg.Subject, "Appointment canceled") {
		t.Errorf("rendered cancellation: %v %+v", err, msg)
	}

	// Idempotent.
	e.publishRaw(events.SubjectAppointmentCanceled, "evt-c1-again", e.marshal(canceled("evt-c1", "ap-4")))
	e.waitIdle()
	if n, c := e.scopeCount(subject), len(e.mailCmds(mail.KindAppointmentCanceled)); n != 2 || c != 1 {
		t.Errorf("after a re-publish: %d states, %d cancellation emails; want 2, 1", n, c)
	}
	// A reschedule of a canceled appointment changes nothing.
	e.publish(rescheduled("evt-c2", "ap-4", starts.Add(24*time.Hour)))
	// Nor is a reminder sent.
	e.publish(reminder("evt-c3", "ap-4", nil))
	e.waitIdle()
	if n := e.scopeCount(subject); n != 2 {
		t.Errorf("%d states after a reschedule of a canceled appointment, want 2", n)
	}
	if got := e.outcome(events.SubjectAppointmentRescheduled, "ignored_canceled"); got != 1 {
		t.Errorf("ignored_canceled count %v, want 1", got)
	}
	if got := e.outcome(events.SubjectAppointmentReminder, "skipped"); got != 1 {
		t.Errorf("skipped reminders %v, want 1", got)
	}
	if n := len(e.mailCmds("")); n != 2 {
		t.Errorf("%d mails, want 2 (confirmation, cancellation)", n)
	}
	if n := len(e.schedules("ap-4")); n != 0 {
		t.Errorf("%d schedules after all, want none", n)
	}
}

func TestReminderSchedulesArePlannedReplannedAndRemoved(t *testing.T) {
	e := newApptEnv(t)
	// In 48 hours: the 72h reminder's time has passed; the 24h one is due
	// at tA+24h.
	s5 := tA.Add(48 * time.Hour)
	e.publish(scheduled("evt-p1", "ivy", "ap-5", s5, true, nil))
	// The action's own offsets (120m is 2h once).
	s6 := tA.Add(10 * 24 * time.Hour)
	e.publish(scheduled("evt-p2", "ivy", "ap-6", s6, false, []string{"2h", "30m", "120m"}))
	// None.
	e.publish(scheduled("evt-p3", "ivy", "ap-7", s6, true, []string{}))
	// A 29-day offset, fired long after ACTIONS's 7-day MaxAge.
	s8 := tA.Add(40 * 24 * time.Hour)
	e.publish(scheduled("evt-p4", "ivy", "ap-8", s8, true, []string{"696h"}))
	e.waitIdle()
	e.wantSchedules("ap-5", s5, map[string]time.Time{"24h": tA.Add(24 * time.Hour)})
	e.wantSchedules("ap-6", s6, map[string]time.Time{"2h": s6.Add(-2 * time.Hour), "30m": s6.Add(-30 * time.Minute)})
	e.wantSchedules("ap-7", s6, nil)
	e.wantSchedules("ap-8", s8, map[string]time.Time{"696h": s8.Add(-696 * time.Hour)})

	// The practice's policy when the action names none.
	e.publish(&events.PracticeUpdated{Envelope: events.Envelope{EventID: "evt-pol", PracticeID: "acme"},
		Practice: events.Practice{Name: "Acme"}, Policy: &events.Policy{Reminders: []string{"12h"}}})
	e.waitIdle()
	s9 := tA.Add(5 * 24 * time.Hour)
	e.publish(scheduled("evt-p5", "ivy", "ap-9", s9, true, nil))
	e.waitIdle()
	e.wantSchedules("ap-9", s9, map[string]time.Time{"12h": s9.Add(-12 * time.Hour)})

	// Re-planned on reschedule: ap-5 moves out, both offsets now ahead
	// (the appointment keeps the offsets it was scheduled with, not the
	// practice's new policy).
	s5b := tA.Add(100 * time.Hour)
	e.publish(rescheduled("evt-p6", "ap-5", s5b))
	// ap-6 moves so close that no reminder is due any more.
	e.publish(rescheduled("evt-p7", "ap-6", tA.Add(20*time.Minute)))
	e.waitIdle()
	e.wantSchedules("ap-5", s5b, map[string]time.Time{"72h": s5b.Add(-72 * time.Hour), "24h": s5b.Add(-24 * time.Hour)})
	e.wantSchedules("ap-6", s6, nil)

	// Removed on cancel.
	e.publish(canceled("evt-p8", "ap-9"))
	e.waitIdle()
	e.wantSchedules("ap-9", s9, nil)
	if got := e.metric(e.reg, "linkpipe_issuer_reminder_schedules_total", map[string]string{"op": "planned"}); got != 7 {
		t.Errorf("planned schedules counted %v", got)
	}
}

func TestReminderCarriesTheCurrentLink(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	ends := starts.Add(apptLen)
	a := scheduled("evt-m0", "jon", "ap-10", starts, true, nil)
	e.publish(a)
	e.waitIdle()
	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-m0")
	subject := scope.Appointment("acme", "jon", "ap-10")

	// Three days before (what the 72h schedule publishes).
	e.clk.Set(starts.Add(-72 * time.Hour))
	e.publish(reminder("evt-rem72", "ap-10", &starts))
	// A practice system's own reminder, without starts_at.
	e.publish(reminder("evt-rem-own", "ap-10", nil))
	e.waitIdle()
	for _, id := range []string{"evt-rem72", "evt-rem-own"} {
		cmd := e.mailFor(mail.KindAppointmentReminder, id)
		if cmd.LinkID != linkID || cmd.Kid != "k1" || cmd.MintEventID != "evt-m0" || cmd.Purpose != events.PurposeTelehealth ||
			!cmd.ExpiresAt.Equal(ends.Add(grace)) || !cmd.Appointment.StartsAt.Equal(starts) || cmd.To != a.Client {
			t.Errorf("%s: reminder %+v", id, cmd)
		}
		token, _ := e.keys.Mint(cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID)
		if msg, err := mail.Render(&cmd, e.dir.Get("acme"), "https://r.example/l/"+token); err != nil ||
			!strings.Contains(msg.Text, token) || !strings.HasPrefix(msg.Subject, "Reminder") {
			t.Errorf("%s: rendered reminder: %v %+v", id, err, msg)
		}
	}
	// The 72-hour reminder's link works at the appointment, and after it
	// for the grace period.
	for _, at := range []time.Time{starts, starts.Add(10 * time.Minute), ends.Add(grace - time.Second)} {
		if v := e.verdict(subject, linkID, at); !v.OK {
			t.Errorf("at %s: %+v", at, v)
		}
	}
	// One email per reminder event.
	e.publishRaw(events.SubjectAppointmentReminder, "evt-rem72-again", e.marshal(reminder("evt-rem72", "ap-10", &starts)))
	e.waitIdle()
	if n := len(e.mailCmds(mail.KindAppointmentReminder)); n != 2 {
		t.Errorf("%d reminders, want 2", n)
	}

	// After a reschedule the reminder carries the same link with the new
	// window.
	starts2 := starts.Add(24 * time.Hour)
	e.publish(rescheduled("evt-m1", "ap-10", starts2))
	e.waitIdle()
	e.publish(reminder("evt-rem-new", "ap-10", &starts2))
	e.waitIdle()
	cmd := e.mailFor(mail.KindAppointmentReminder, "evt-rem-new")
	if cmd.LinkID != linkID || !cmd.ExpiresAt.Equal(starts2.Add(apptLen+grace)) || !cmd.Appointment.StartsAt.Equal(starts2) {
		t.Errorf("reminder after the reschedule: %+v", cmd)
	}
	if got := e.outcome(events.SubjectAppointmentReminder, "reminded"); got != 3 {
		t.Errorf("reminded count %v, want 3", got)
	}
}

func TestStaleOrPointlessRemindersAreNotSent(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(96 * time.Hour)
	e.publish(scheduled("evt-k0", "kim", "ap-11", starts, true, nil))
	e.publish(scheduled("evt-k5", "kim", "ap-12", tA.Add(2*time.Hour), false, nil))
	e.waitIdle()
	starts2 := starts.Add(48 * time.Hour)
	e.publish(rescheduled("evt-k1", "ap-11", starts2))
	e.waitIdle()

	// Planned for the old time: stale.
	e.publish(reminder("evt-k2", "ap-11", &starts))
	e.waitIdle()
	if n := len(e.mailCmds(mail.KindAppointmentReminder)); n != 0 {
		t.Errorf("a stale reminder was mailed")
	}
	if got := e.outcome(events.SubjectAppointmentReminder, "stale"); got != 1 {
		t.Errorf("stale count %v, want 1", got)
	}
	// Planned for the current time: sent.
	e.publish(reminder("evt-k3", "ap-11", &starts2))
	e.waitIdle()
	e.mailFor(mail.KindAppointmentReminder, "evt-k3")

	// The in-person appointment is over.
	e.clk.Set(tA.Add(3 * time.Hour))
	e.publish(reminder("evt-k6", "ap-12", nil))
	// The client's links were revoked.
	e.publish(revocation("evt-k7", "kim", ""))
	e.waitIdle()
	e.publish(reminder("evt-k4", "ap-11", &starts2))
	e.waitIdle()
	if n := len(e.mailCmds(mail.KindAppointmentReminder)); n != 1 {
		t.Errorf("%d reminders mailed, want 1", n)
	}
	if got := e.outcome(events.SubjectAppointmentReminder, "skipped"); got != 2 {
		t.Errorf("skipped count %v, want 2 (over, revoked)", got)
	}
}

func TestActionsForAnUnknownAppointmentAreDeadLettered(t *testing.T) {
	e := newApptEnv(t)
	seqs := []uint64{
		e.publish(rescheduled("evt-u1", "ap-none", tA.Add(time.Hour))),
		e.publish(canceled("evt-u2", "ap-none")),
		e.publish(reminder("evt-u3", "ap-none", nil)),
	}
	e.waitIdle()
	dl := e.deadLetters()
	for _, seq := range seqs {
		reason := dl[strconv.FormatUint(seq, 10)]
		if !strings.Contains(reason, "unknown appointment") || !strings.Contains(reason, "ap-none") {
			t.Errorf("seq %d: dead letter reason %q", seq, reason)
		}
	}
	// Retried a few times first (its scheduled action may be in flight),
	// not forever.
	for _, subj := range []string{events.SubjectAppointmentRescheduled, events.SubjectAppointmentCanceled, events.SubjectAppointmentReminder} {
		if got := e.outcome(subj, "retry"); got != 4 {
			t.Errorf("%s: %v retries, want 4", subj, got)
		}
		if got := e.outcome(subj, "dead_letter"); got != 1 {
			t.Errorf("%s: %v dead letters, want 1", subj, got)
		}
	}

	// Published right after its scheduled action, a reschedule finds it
	// even if handled first.
	e.publish(scheduled("evt-u4", "lea", "ap-13", tA.Add(96*time.Hour), true, nil))
	e.publish(rescheduled("evt-u5", "ap-13", tA.Add(120*time.Hour)))
	e.waitIdle()
	st, _ := e.scopeState(scope.Appointment("acme", "lea", "ap-13"))
	if st.Change != scope.ChangeRescheduled || !st.Appointment.StartsAt.Equal(tA.Add(120*time.Hour)) {
		t.Errorf("scope after scheduled+rescheduled: %+v", st)
	}
}

func TestAppointmentActionsHandledOutOfOrder(t *testing.T) {
	e := newEnv(t)
	e.clk.Set(tA)
	starts := tA.Add(96 * time.Hour)
	e.publish(scheduled("evt-o0", "max", "ap-14", starts, true, nil))
	e.handleAll(e.fetch(1)...)
	subject := scope.Appointment("acme", "max", "ap-14")

	// Two reschedules, the newer handled first: the newer wins.
	sA, sB := starts.Add(24*time.Hour), starts.Add(48*time.Hour)
	e.publish(rescheduled("evt-oA", "ap-14", sA))
	e.publish(rescheduled("evt-oB", "ap-14", sB))
	msgs := e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	st, _ := e.scopeState(subject)
	if !st.Appointment.StartsAt.Equal(sB) || st.EventID != "evt-oB" {
		t.Errorf("after reschedules B then A: %+v", st)
	}
	if n := len(e.mailCmds(mail.KindAppointmentRescheduled)); n != 1 {
		t.Errorf("%d moved emails, want 1 (the stale reschedule sends none)", n)
	}
	if got := e.outcome(events.SubjectAppointmentRescheduled, "stale"); got != 1 {
		t.Errorf("stale count %v", got)
	}

	// A cancellation handled after a newer reschedule still cancels (the
	// reschedule of a canceled appointment would have changed nothing).
	e.publish(canceled("evt-oC", "ap-14"))
	e.publish(rescheduled("evt-oD", "ap-14", starts.Add(72*time.Hour)))
	msgs = e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	st, _ = e.scopeState(subject)
	if st.CanceledAt == nil || st.Change != scope.ChangeCanceled {
		t.Errorf("after reschedule D then cancel C: %+v", st)
	}

	// A cancellation handled after a newer re-booking does not cancel it.
	e.publish(canceled("evt-oE", "ap-14"))
	e.publish(scheduled("evt-oF", "max", "ap-14", starts, true, nil))
	msgs = e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	st, _ = e.scopeState(subject)
	linkF := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-oF")
	if st.CanceledAt != nil || st.LinkID != linkF {
		t.Errorf("after re-booking F then cancel E: %+v", st)
	}
	if v := st.Verdict(linkF, tA); !v.OK {
		t.Errorf("re-booked link: %+v", v)
	}
}

// handleAll hands messages to the (not running) issuer in the given order.
func (e *env) handleAll(msgs ...jetstream.Msg) {
	e.t.Helper()
	for _, m := range msgs {
		if err := e.iss.Handle(e.ctx, m); err != nil {
			e.t.Fatalf("handle %s: %v", m.Subject(), err)
		}
	}
}
