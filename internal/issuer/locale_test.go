package issuer_test

import (
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// TestClientLocaleReachesEveryEmail: the client's language, given once on
// an action, is on every mail command sent to them, including the ones
// caused by actions that do not name the client (reminders, reschedules)
// and renewals asked for from a refusal page.
func TestClientLocaleReachesEveryEmail(t *testing.T) {
	e := newApptEnv(t)
	s := signin("evt-l1", "lu")
	s.Client.Locale = "es-MX"
	e.publish(s)
	starts := tA.Add(96 * time.Hour)
	a := scheduled("evt-l2", "lu", "ap-l", starts, true, nil)
	a.Client.Locale = "es-MX"
	e.publish(a)
	e.waitIdle()
	e.publish(reminder("evt-l3", "ap-l", tp(starts)))
	e.publish(rescheduled("evt-l4", "ap-l", starts.Add(time.Hour)))
	e.publish(renewal("evt-l5", e.linkIDOf(events.PurposeSignin, "acme", "evt-l1")))
	e.waitIdle()
	for _, c := range []struct{ kind, event string }{
		{mail.KindSignin, "evt-l1"},
		{mail.KindAppointmentConfirmed, "evt-l2"},
		{mail.KindAppointmentReminder, "evt-l3"},
		{mail.KindAppointmentRescheduled, "evt-l4"},
		{mail.KindSignin, "evt-l5"},
	} {
		if cmd := e.mailFor(c.kind, c.event); cmd.To.Locale != "es-MX" {
			t.Errorf("%s mail of %s: locale %q, want es-MX", c.kind, c.event, cmd.To.Locale)
		}
	}
}
