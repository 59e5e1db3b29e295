package mail

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"maps"
	"slices"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// Render turns a mail command into the email to send: a plain-text and an
// HTML body (values escaped by html/template), Reply-To the practice's
// reply_to (none when the practice set none), a subject that says what the
// email is and until when its link works (appointments: the date and time in
// the appointment's time zone), and X-Entity-Ref-ID / X-Linkpipe-Mail-ID
// headers carrying the mail id so that no two emails are threaded together.
// From is left empty: the mailer sets it.
//
// linkURL is the link the email carries (<PUBLIC_URL>/l/<token>); kinds that
// carry a link refuse an empty one. Each kind has its own renderer (see
// contentFor); adding a kind means adding one function.
func Render(cmd *Command, p practice.Settings, linkURL string) (*Message, error) {
	if cmd == nil {
		return nil, fmt.Errorf("%w: nil command", ErrBadCommand)
	}
	if !events.ValidID(cmd.MailID) {
		return nil, fmt.Errorf("%w: mail_id %q", ErrBadCommand, cmd.MailID)
	}
	if err := events.CheckEmail("to.email", cmd.To.Email); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	build, ok := contentFor(cmd.Kind)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, cmd.Kind)
	}
	practiceName := HeaderValue(p.Name)
	if practiceName == "" {
		practiceName = cmd.PracticeID
	}
	c, err := build(&view{cmd: cmd, practice: practiceName, url: linkURL})
	if err != nil {
		return nil, err
	}
	c.Practice = practiceName
	c.URL = linkURL
	if c.Button == "" {
		c.URL = ""
	}
	if name := HeaderValue(cmd.To.Name); name != "" {
		c.Greeting = "Hello " + name + ","
	} else {
		c.Greeting = "Hello,"
	}
	replyTo := HeaderValue(p.ReplyTo)
	if replyTo != "" {
		c.Footer = "Sent by " + practiceName + " through its client portal. Reply to this email to reach " + practiceName + "."
	} else {
		c.Footer = "Sent by " + practiceName + " through its client portal. Replies to this address are not read; please contact " + practiceName + " directly."
	}

	var text, html bytes.Buffer
	if err := textTmpl.Execute(&text, c); err != nil {
		return nil, fmt.Errorf("mail: render text %s: %w", cmd.Kind, err)
	}
	if err := htmlTmpl.Execute(&html, c); err != nil {
		return nil, fmt.Errorf("mail: render html %s: %w", cmd.Kind, err)
	}
	ref := ASCIIHeaderValue(cmd.MailID)
	m := &Message{
		To:      HeaderValue(cmd.To.Email),
		ReplyTo: replyTo,
		Subject: HeaderValue(c.Subject),
		Text:    text.String(),
		HTML:    html.String(),
		Headers: map[string]string{
			HeaderEntityRefID: ref,
			HeaderMailID:      ref,
			HeaderKind:        ASCIIHeaderValue(cmd.Kind),
		},
	}
	return m, nil
}

// content is what a kind's renderer decides; the templates lay it out.
type content struct {
	Subject string
	// Preheader is the line mail clients show after the subject.
	Preheader string
	Greeting  string
	// Intro paragraphs come before the link.
	Intro []string
	// Button labels the link; empty means the email carries no link.
	Button string
	URL    string
	// Notes come after the link: how long it works, how often, what to do
	// if it stops working.
	Notes    []string
	Practice string
	Footer   string
}

// view is what a renderer reads.
type view struct {
	cmd      *Command
	practice string
	url      string
}

type renderer func(v *view) (content, error)

// renderers is every kind's renderer.
func renderers() map[string]renderer {
	return map[string]renderer{
		KindSignin:                 renderSignin,
		KindDocument:               renderDocument,
		KindAppointmentConfirmed:   renderAppointmentConfirmed,
		KindAppointmentReminder:    renderAppointmentReminder,
		KindAppointmentRescheduled: renderAppointmentRescheduled,
		KindAppointmentCanceled:    renderAppointmentCanceled,
	}
}

// contentFor returns the renderer of a kind.
func contentFor(kind string) (renderer, bool) {
	r, ok := renderers()[kind]
	return r, ok
}

// Kinds returns every kind Render knows, sorted (for tests that must cover
// each one).
func Kinds() []string {
	return slices.Sorted(maps.Keys(renderers()))
}

// Time layouts: link validity in UTC (we do not know the client's zone),
// appointments in the appointment's own zone.
const (
	layoutShort   = "Mon 2 Jan, 15:04 MST"
	layoutApptSub = "Mon 2 Jan, 3:04 PM MST"
	layoutApptDay = "Monday 2 January, 3:04 PM"
	layoutApptEnd = "3:04 PM MST"
)

const clickNote = "The link opens a page with a button; nothing happens until you press it, so it is safe for your email provider to check the link first. If the link no longer works, that page tells you why and lets you ask for a fresh one."

func (v *view) requireLink() error {
	if v.url == "" {
		return fmt.Errorf("%w: %s email without a link URL", ErrBadCommand, v.cmd.Kind)
	}
	return nil
}

// until is the link's expiry in UTC ("Tue 24 Nov, 14:05 UTC").
func (v *view) until() (string, error) {
	if v.cmd.ExpiresAt.IsZero() {
		return "", fmt.Errorf("%w: %s email without expires_at", ErrBadCommand, v.cmd.Kind)
	}
	return v.cmd.ExpiresAt.UTC().Format(layoutShort), nil
}

// lifetime is how long the link works from its start, in words.
func (v *view) lifetime() string {
	from := v.cmd.ValidFrom
	if from.IsZero() {
		from = v.cmd.At
	}
	if from.IsZero() {
		return ""
	}
	return humanDuration(v.cmd.ExpiresAt.Sub(from))
}

func renderSignin(v *view) (content, error) {
	if err := v.requireLink(); err != nil {
		return content{}, err
	}
	until, err := v.until()
	if err != nil {
		return content{}, err
	}
	valid := "This link works once, until " + until + "."
	if d := v.lifetime(); d != "" {
		valid = "This link works once and is valid for " + d + ", until " + until + "."
	}
	return content{
		Subject:   "Your sign-in link for " + v.practice + " (valid until " + until + ")",
		Preheader: "Sign in to " + v.practice + ". The link works once, until " + until + ".",
		Intro:     []string{"Here is your link to sign in to the client portal of " + v.practice + "."},
		Button:    "Sign in to " + v.practice,
		Notes: []string{
			valid + " If you ask for another sign-in link, only the newest one works.",
			clickNote,
			"If you did not ask for this link, you can ignore this email: nobody can sign in without it.",
		},
	}, nil
}

func renderDocument(v *view) (content, error) {
	if err := v.requireLink(); err != nil {
		return content{}, err
	}
	if v.cmd.Document == nil || v.cmd.Document.Title == "" {
		return content{}, fmt.Errorf("%w: document email without a document", ErrBadCommand)
	}
	until, err := v.until()
	if err != nil {
		return content{}, err
	}
	title := HeaderValue(v.cmd.Document.Title)
	valid := "This link works once, until " + until + "."
	if d := v.lifetime(); d != "" {
		valid = "This link works once and is valid for " + d + ", until " + until + "."
	}
	return content{
		Subject:   v.practice + " shared \u201c" + title + "\u201d with you (link valid until " + until + ")",
		Preheader: v.practice + " shared a document with you. The link works once, until " + until + ".",
		Intro:     []string{v.practice + " shared a document with you: \u201c" + title + "\u201d."},
		Button:    "Open the document",
		Notes:     []string{valid, clickNote},
	}, nil
}

// appt is an appointment's times in its own zone, in words.
type appt struct {
	short     string // "Tue 1 Dec, 9:00 AM CST" (subjects)
	long      string // "Tuesday 1 December, 9:00 AM - 9:50 AM CST"
	with      string // " with Dr Lee" or ""
	tele      bool
	linkUntil string // link expiry in the appointment's zone
}

func (v *view) appointment() (appt, error) {
	a := v.cmd.Appointment
	if a == nil || a.StartsAt == nil {
		return appt{}, fmt.Errorf("%w: %s email without the appointment's time", ErrBadCommand, v.cmd.Kind)
	}
	loc := time.UTC
	if a.Timezone != "" {
		l, err := time.LoadLocation(a.Timezone)
		if err != nil {
			return appt{}, fmt.Errorf("%w: time zone %q: %v", ErrBadCommand, a.Timezone, err)
		}
		loc = l
	}
	start := a.StartsAt.In(loc)
	out := appt{short: start.Format(layoutApptSub), tele: a.Telehealth}
	if a.EndsAt != nil {
		out.long = start.Format(layoutApptDay) + " \u2013 " + a.EndsAt.In(loc).Format(layoutApptEnd)
	} else {
		out.long = start.Format(layoutApptDay + " MST")
	}
	if name := HeaderValue(a.ClinicianName); name != "" {
		out.with = " with " + name
	}
	if !v.cmd.ExpiresAt.IsZero() {
		out.linkUntil = v.cmd.ExpiresAt.In(loc).Format(layoutApptSub)
	}
	return out, nil
}

// telehealth returns the button and notes of an appointment email that
// carries the video link (none for in-person appointments or a command
// without a link).
func (v *view) telehealth(a appt) (button string, notes []string, err error) {
	if v.cmd.LinkID == "" {
		if a.tele {
			return "", []string{"To join the video appointment, sign in to the client portal, or reply to this email to ask the practice for a link."}, nil
		}
		return "", []string{"This appointment is in person."}, nil
	}
	if err := v.requireLink(); err != nil {
		return "", nil, err
	}
	reuse := "You can use this link as often as you need"
	if a.linkUntil != "" {
		reuse += ", until " + a.linkUntil
	}
	reuse += ": if you lose the connection, click it again to rejoin."
	return "Join the video appointment", []string{reuse, clickNote}, nil
}

// appointmentMail is what the appointment emails that may carry the
// video link share: the appointment's words, the button, the notes, and
// "appointment" or "video appointment".
func (v *view) appointmentMail() (a appt, button string, notes []string, kind string, err error) {
	if a, err = v.appointment(); err != nil {
		return a, "", nil, "", err
	}
	if button, notes, err = v.telehealth(a); err != nil {
		return a, "", nil, "", err
	}
	kind = "appointment"
	if a.tele {
		kind = "video appointment"
	}
	return a, button, notes, kind, nil
}

func renderAppointmentConfirmed(v *view) (content, error) {
	a, button, notes, kind, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	return content{
		Subject:   "Appointment confirmed: " + a.short + a.with + " \u2013 " + v.practice,
		Preheader: "Your " + kind + " on " + a.short + " is confirmed.",
		Intro:     []string{"Your " + kind + a.with + " at " + v.practice + " is confirmed for " + a.long + "."},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentReminder(v *view) (content, error) {
	a, button, notes, kind, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	return content{
		Subject:   "Reminder: your appointment on " + a.short + a.with + " \u2013 " + v.practice,
		Preheader: "A reminder of your " + kind + " on " + a.short + ".",
		Intro:     []string{"This is a reminder of your " + kind + a.with + " at " + v.practice + " on " + a.long + "."},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentRescheduled(v *view) (content, error) {
	a, button, notes, _, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	if button != "" {
		notes = append([]string{"Your video link stays the same; it now works for the new time."}, notes...)
	}
	return content{
		Subject:   "Appointment moved to " + a.short + a.with + " \u2013 " + v.practice,
		Preheader: "Your appointment now takes place on " + a.short + ".",
		Intro:     []string{"Your appointment" + a.with + " at " + v.practice + " has moved. It now takes place on " + a.long + "."},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentCanceled(v *view) (content, error) {
	a, err := v.appointment()
	if err != nil {
		return content{}, err
	}
	notes := []string{}
	if a.tele {
		notes = append(notes, "The video link of this appointment no longer works.")
	}
	return content{
		Subject:   "Appointment canceled: " + a.short + a.with + " \u2013 " + v.practice,
		Preheader: "Your appointment on " + a.short + " has been canceled.",
		Intro:     []string{"Your appointment" + a.with + " at " + v.practice + " on " + a.long + " has been canceled."},
		Notes:     notes,
	}, nil
}

// humanDuration says d in words: "24 hours", "3 days", "90 minutes".
func humanDuration(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d <= 0:
		return ""
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return plural(int64(d/(24*time.Hour)), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int64(d/time.Hour), "hour")
	case d >= 2*time.Hour:
		return plural(int64((d+30*time.Minute)/time.Hour), "hour")
	default:
		return plural(int64((d+30*time.Second)/time.Minute), "minute")
	}
}

var textTmpl = texttemplate.Must(texttemplate.New("text").Parse(strings.TrimLeft(`
{{.Greeting}}

{{range .Intro}}{{.}}

{{end}}{{if .URL}}{{.Button}}:
{{.URL}}

{{end}}{{range .Notes}}{{.}}

{{end}}--
{{.Footer}}
`, "\n")))

var htmlTmpl = htmltemplate.Must(htmltemplate.New("html").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Subject}}</title>
</head>
<body style="margin:0;padding:0;background:#f4f5f7;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933;">
<span style="display:none;max-height:0;overflow:hidden;opacity:0;">{{.Preheader}}</span>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f5f7;padding:24px 0;">
<tr><td align="center">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:560px;background:#ffffff;border-radius:8px;padding:32px;">
<tr><td>
<p style="margin:0 0 24px;font-size:14px;color:#52606d;font-weight:600;">{{.Practice}}</p>
<p style="margin:0 0 16px;font-size:16px;line-height:1.5;">{{.Greeting}}</p>
{{range .Intro}}<p style="margin:0 0 16px;font-size:16px;line-height:1.5;">{{.}}</p>
{{end}}{{if .URL}}<p style="margin:24px 0;"><a href="{{.URL}}" style="display:inline-block;background:#1f6feb;color:#ffffff;text-decoration:none;font-size:16px;font-weight:600;padding:12px 24px;border-radius:6px;">{{.Button}}</a></p>
<p style="margin:0 0 16px;font-size:13px;line-height:1.5;color:#52606d;">If the button does not work, copy this address into your browser:<br><a href="{{.URL}}" style="color:#1f6feb;word-break:break-all;">{{.URL}}</a></p>
{{end}}{{range .Notes}}<p style="margin:0 0 16px;font-size:14px;line-height:1.5;color:#323f4b;">{{.}}</p>
{{end}}<hr style="border:none;border-top:1px solid #e4e7eb;margin:24px 0 16px;">
<p style="margin:0;font-size:12px;line-height:1.5;color:#52606d;">{{.Footer}}</p>
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
`))
