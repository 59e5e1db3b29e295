package mail_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
)

var issued = time.Date(2026, 11, 23, 14, 5, 0, 0, time.UTC)

func signinCmd() *mail.Command {
	return &mail.Command{
		MailID: "Labc-signin", Kind: mail.KindSignin, PracticeID: "acme",
		To:     events.Client{ID: "c1", Email: "pat@example.com", Name: "Pat <b>Smith</b>"},
		LinkID: "Labc", Kid: "k1", Purpose: events.PurposeSignin, MintEventID: "e1",
		ValidFrom: issued, ExpiresAt: issued.Add(24 * time.Hour), CauseEventID: "e1", At: issued,
	}
}

func settings() practice.Settings {
	return practice.Settings{ID: "acme", Name: "Acme & Co Therapy", ReplyTo: "desk@acme.example", Policy: link.DefaultPolicy(), Known: true}
}

const url = "https://links.example/l/k1.AAAA?x=1&y=<2>"

func TestRenderSignin(t *testing.T) {
	m, err := mail.Render(signinCmd(), settings(), url)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Your sign-in link for Acme & Co Therapy (valid until Tue 24 Nov, 14:05 UTC)"; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if m.To != "pat@example.com" || m.ReplyTo != "desk@acme.example" || m.From != "" {
		t.Errorf("addresses: to %q reply-to %q from %q", m.To, m.ReplyTo, m.From)
	}
	if m.Headers[mail.HeaderEntityRefID] != "Labc-signin" || m.Headers[mail.HeaderMailID] != "Labc-signin" {
		t.Errorf("headers %v", m.Headers)
	}
	for _, want := range []string{"Hello Pat <b>Smith</b>,", url, "works once", "24 hours", "Tue 24 Nov, 14:05 UTC", "Reply to this email"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, m.Text)
		}
	}
	// HTML escapes what it shows; the link survives (attribute-escaped).
	if strings.Contains(m.HTML, "<b>Smith</b>") || !strings.Contains(m.HTML, "Pat &lt;b&gt;Smith&lt;/b&gt;") {
		t.Errorf("name not escaped in HTML")
	}
	if !strings.Contains(m.HTML, `href="https://links.example/l/k1.AAAA?x=1&amp;y=%3c2%3e"`) {
		t.Errorf("link missing from HTML:\n%s", m.HTML)
	}
	if !strings.Contains(m.HTML, "Acme &amp; Co Therapy") {
		t.Errorf("practice name not escaped in HTML")
	}
}

func TestRenderNoReplyTo(t *testing.T) {
	p := settings()
	p.ReplyTo = ""
	m, err := mail.Render(signinCmd(), p, url)
	if err != nil {
		t.Fatal(err)
	}
	if m.ReplyTo != "" || !strings.Contains(m.Text, "Replies to this address are not read") {
		t.Errorf("reply-to %q; text:\n%s", m.ReplyTo, m.Text)
	}
}

func TestRenderDocument(t *testing.T) {
	c := signinCmd()
	c.Kind, c.MailID, c.Purpose = mail.KindDocument, "Ldoc-document", events.PurposeDocument
	c.ExpiresAt = issued.Add(72 * time.Hour)
	c.Document = &events.Document{ID: "d1", Title: "Intake form"}
	m, err := mail.Render(c, settings(), url)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Acme & Co Therapy shared \u201cIntake form\u201d with you (link valid until Thu 26 Nov, 14:05 UTC)"; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if !strings.Contains(m.Text, "3 days") || !strings.Contains(m.Text, "works once") {
		t.Errorf("text:\n%s", m.Text)
	}
	c.Document = nil
	if _, err := mail.Render(c, settings(), url); !errors.Is(err, mail.ErrBadCommand) {
		t.Errorf("document email without a document: %v", err)
	}
}

func TestRenderAppointmentsInTheirZone(t *testing.T) {
	start := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC) // 9:00 AM in Chicago
	end := start.Add(50 * time.Minute)
	c := signinCmd()
	c.Purpose = events.PurposeTelehealth
	c.ExpiresAt = end.Add(30 * time.Minute)
	c.Appointment = &events.Appointment{ID: "a1", StartsAt: &start, EndsAt: &end, Telehealth: true,
		ClinicianName: "Dr Lee", Timezone: "America/Chicago"}
	cases := map[string]string{
		mail.KindAppointmentConfirmed:   "Appointment confirmed: Tue 1 Dec, 9:00 AM CST with Dr Lee \u2013 Acme & Co Therapy",
		mail.KindAppointmentReminder:    "Reminder: your appointment on Tue 1 Dec, 9:00 AM CST with Dr Lee \u2013 Acme & Co Therapy",
		mail.KindAppointmentRescheduled: "Appointment moved to Tue 1 Dec, 9:00 AM CST with Dr Lee \u2013 Acme & Co Therapy",
		mail.KindAppointmentCanceled:    "Appointment canceled: Tue 1 Dec, 9:00 AM CST with Dr Lee \u2013 Acme & Co Therapy",
	}
	for kind, subject := range cases {
		c.Kind, c.MailID = kind, "La1-"+kind
		m, err := mail.Render(c, settings(), url)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if m.Subject != subject {
			t.Errorf("%s: subject %q, want %q", kind, m.Subject, subject)
		}
		hasLink := strings.Contains(m.Text, url)
		if hasLink == (kind == mail.KindAppointmentCanceled) {
			t.Errorf("%s: link present %v:\n%s", kind, hasLink, m.Text)
		}
		if kind != mail.KindAppointmentCanceled && !strings.Contains(m.Text, "until Tue 1 Dec, 10:20 AM CST") {
			t.Errorf("%s: validity missing:\n%s", kind, m.Text)
		}
		if !strings.Contains(m.Text, "Tuesday 1 December, 9:00 AM \u2013 9:50 AM CST") {
			t.Errorf("%s: time missing:\n%s", kind, m.Text)
		}
	}
	// In person, no link.
	c.Kind, c.LinkID, c.Appointment.Telehealth = mail.KindAppointmentConfirmed, "", false
	m, err := mail.Render(c, settings(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "in person") || strings.Contains(m.HTML, "<a href") {
		t.Errorf("in-person email:\n%s", m.Text)
	}
}

func TestRenderRefusals(t *testing.T) {
	c := signinCmd()
	if _, err := mail.Render(c, settings(), ""); !errors.Is(err, mail.ErrBadCommand) {
		t.Errorf("no link URL: %v", err)
	}
	c.Kind = "postcard"
	if _, err := mail.Render(c, settings(), url); !errors.Is(err, mail.ErrUnknownKind) {
		t.Errorf("unknown kind: %v", err)
	}
	c = signinCmd()
	c.To.Email = "pat@example.com\r\nBcc: evil@example.com"
	if _, err := mail.Render(c, settings(), url); !errors.Is(err, mail.ErrBadCommand) {
		t.Errorf("CRLF in address: %v", err)
	}
	c = signinCmd()
	c.ExpiresAt = time.Time{}
	if _, err := mail.Render(c, settings(), url); !errors.Is(err, mail.ErrBadCommand) {
		t.Errorf("no expiry: %v", err)
	}
}

func TestNoCRLFReachesAHeader(t *testing.T) {
	c := signinCmd()
	p := settings()
	p.Name = "Acme\r\nBcc: evil@example.com"
	p.ReplyTo = "desk@acme.example\nX-Evil: 1"
	m, err := mail.Render(c, p, url)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"subject": m.Subject, "reply-to": m.ReplyTo, "to": m.To} {
		if strings.ContainsAny(v, "\r\n") {
			t.Errorf("%s carries CR/LF: %q", name, v)
		}
	}
	msg := &mail.Message{From: "a@b.c\r\n", Subject: "x\n\ny", Headers: map[string]string{"X-Ok": "v\r\nX-Evil: 1", "Bad:Name": "v", "X-Uni": "caf\u00e9"}}
	msg.Sanitize()
	if msg.From != "a@b.c" || msg.Subject != "x y" || msg.Headers["X-Ok"] != "v X-Evil: 1" || msg.Headers["X-Uni"] != "caf" {
		t.Errorf("sanitized: %+v", msg)
	}
	if _, ok := msg.Headers["Bad:Name"]; ok {
		t.Error("invalid header name kept")
	}
}

func TestSenderErrors(t *testing.T) {
	if !errors.Is(mail.ErrThrottled, mail.ErrTransient) {
		t.Error("ErrThrottled must be transient")
	}
	if !errors.Is(mail.ErrRefused, mail.ErrTransient) || mail.IsPermanent(mail.ErrRefused) || errors.Is(mail.ErrRefused, mail.ErrThrottled) {
		t.Error("ErrRefused must be transient, neither permanent nor throttled")
	}
	if mail.IsPermanent(mail.ErrThrottled) || !mail.IsPermanent(errors.Join(errors.New("x"), mail.ErrPermanent)) {
		t.Error("IsPermanent")
	}
}

func BenchmarkRenderSignin(b *testing.B) {
	c, p := signinCmd(), settings()
	for b.Loop() {
		if _, err := mail.Render(c, p, url); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRenderBranding: a branded practice's emails are in its time zone and
// language, carry its logo (with its name as the text alternative) and its
// accent, darkened where white text on it would fail 4.5:1 contrast. A
// client's own language beats the practice's.
func TestRenderBranding(t *testing.T) {
	p := settings()
	p.Timezone, p.Locale = "America/New_York", "es"
	p.LogoURL, p.AccentColor = "https://acme.example/logo.png", "#7fd3ff"

	m, err := mail.Render(signinCmd(), p, url)
	if err != nil {
		t.Fatal(err)
	}
	// 14:05 UTC on 24 Nov is 09:05 in New York (EST), in Spanish.
	if want := "Su enlace para iniciar sesión en Acme & Co Therapy (válido hasta el mar 24 nov, 09:05 EST)"; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if !strings.Contains(m.HTML, `<html lang="es">`) || !strings.Contains(m.HTML, `<img src="https://acme.example/logo.png" alt="Acme &amp; Co Therapy"`) {
		t.Errorf("no lang or logo:\n%s", m.HTML)
	}
	if want := practice.Accessible("#7fd3ff", practice.DefaultAccent); want == "#7fd3ff" || !strings.Contains(m.HTML, "background:"+want) {
		t.Errorf("accent %s not darkened to %s on the button:\n%s", p.AccentColor, want, m.HTML)
	}

	c := signinCmd()
	c.To.Locale = "en-US"
	if m, err = mail.Render(c, p, url); err != nil {
		t.Fatal(err)
	}
	if want := "Your sign-in link for Acme & Co Therapy (valid until Tue 24 Nov, 09:05 EST)"; m.Subject != want {
		t.Errorf("client's English: subject %q, want %q", m.Subject, want)
	}
	// A language the catalogue lacks falls back to the practice's.
	c.To.Locale = "de"
	if m, err = mail.Render(c, p, url); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Subject, "Su enlace") {
		t.Errorf("unknown client language: subject %q, want the practice's Spanish", m.Subject)
	}
	// The default: English, UTC, the default accent, no logo.
	if m, err = mail.Render(signinCmd(), settings(), url); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.HTML, "<img") || !strings.Contains(m.HTML, "background:"+practice.DefaultAccent) || !strings.Contains(m.Subject, "14:05 UTC") {
		t.Errorf("plain practice: %s\n%s", m.Subject, m.HTML)
	}
}
