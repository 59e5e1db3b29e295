package mail_test

import (
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// emailLanguages are the languages every email is checked in (the client's
// locale on the command); TestEveryLanguageIsChecked keeps it in step with
// the catalogue.
var emailLanguages = []string{"en", "es"}

// everyEmail is one command of each email kind, with the variants that lay
// out differently (a link or none, telehealth or in person).
func everyEmail() map[string]*mail.Command {
	start := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC)
	end := start.Add(50 * time.Minute)
	appt := func(kind string, tele bool) *mail.Command {
		c := signinCmd()
		c.Kind, c.MailID, c.Purpose = kind, "La1-"+kind, events.PurposeTelehealth
		c.ExpiresAt = end.Add(30 * time.Minute)
		c.Appointment = &events.Appointment{ID: "a1", StartsAt: &start, EndsAt: &end, Telehealth: tele,
			ClinicianName: "Dr Lee", Timezone: "America/Chicago"}
		if !tele {
			c.LinkID = ""
		}
		return c
	}
	doc := signinCmd()
	doc.Kind, doc.MailID, doc.Purpose = mail.KindDocument, "Ldoc-document", events.PurposeDocument
	doc.ExpiresAt = issued.Add(72 * time.Hour)
	doc.Document = &events.Document{ID: "d1", Title: "Intake form"}
	return map[string]*mail.Command{
		"signin":                          signinCmd(),
		"document":                        doc,
		"appointment_confirmed":           appt(mail.KindAppointmentConfirmed, true),
		"appointment_confirmed-in-person": appt(mail.KindAppointmentConfirmed, false),
		"appointment_reminder":            appt(mail.KindAppointmentReminder, true),
		"appointment_reminder-in-person":  appt(mail.KindAppointmentReminder, false),
		"appointment_rescheduled":         appt(mail.KindAppointmentRescheduled, true),
		"appointment_canceled":            appt(mail.KindAppointmentCanceled, true),
	}
}

// TestEmailsAccessible renders every email kind and checks its HTML with
// axe-core in Chromium, at desktop and phone widths: no WCAG 2.1 AA
// violation (the footer's grey once failed colour contrast).
func TestEmailsAccessible(t *testing.T) {
	emails := everyEmail()
	for _, kind := range mail.Kinds() {
		if _, ok := emails[kind]; !ok {
			t.Errorf("no %s email is checked: add one to everyEmail", kind)
		}
	}
	ctx := browsertest.Start(t, browsertest.Timeout(3*time.Minute))
	practices := map[string]practice.Settings{"plain": settings(), "branded": branded()}
	for _, lang := range emailLanguages {
		for pname, p := range practices {
			for name, c := range everyEmail() {
				c.To.Locale = lang
				link := url
				if c.LinkID == "" {
					link = ""
				}
				m, err := mail.Render(c, p, link)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				browsertest.CheckPage(ctx, t, browsertest.Page{Name: "email-" + pname + "-" + name, Lang: lang, URL: browsertest.ServeHTML(t, m.HTML),
					Rules: browsertest.WCAG()})
			}
		}
	}
}

// TestEveryLanguageIsChecked: a language added to the catalogue is checked
// for accessibility too.
func TestEveryLanguageIsChecked(t *testing.T) {
	var got []string
	for _, tag := range locale.Supported() {
		got = append(got, tag.String())
	}
	if strings.Join(got, ",") != strings.Join(emailLanguages, ",") {
		t.Errorf("catalogue has %v, accessibility checks %v", got, emailLanguages)
	}
}
