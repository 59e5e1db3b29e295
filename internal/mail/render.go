package mail

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// Render turns a mail command into the email to send: a plain-text and an
// HTML body (values escaped as html/template would, layout.go), Reply-To
// the practice's reply_to (none when the practice set none), a subject that
// says what the email is and until when its link works (appointments: the
// date and time in the appointment's time zone), and X-Entity-Ref-ID /
// X-Linkpipe-Mail-ID headers carrying the mail id so that no two emails are
// threaded together.
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
	lang := catalogue.ForEmail(cmd.To.Locale, p.Locale)
	c, err := build(&view{cmd: cmd, practice: practiceName, url: linkURL, lang: lang, zone: p.Location()})
	if err != nil {
		return nil, err
	}
	c.Lang = lang.Code()
	c.Practice = practiceName
	c.Logo = p.LogoURL
	c.Accent = p.ButtonColor()
	c.CopyHint = lang.T("If the button does not work, copy this address into your browser:")
	c.URL = linkURL
	if c.Button == "" {
		c.URL = ""
	}
	if name := HeaderValue(cmd.To.Name); name != "" {
		c.Greeting = lang.T("Hello %s,", name)
	} else {
		c.Greeting = lang.T("Hello,")
	}
	replyTo := HeaderValue(p.ReplyTo)
	if replyTo != "" {
		c.Footer = lang.T("Sent by %s through its client portal. Reply to this email to reach %s.", practiceName, practiceName)
	} else {
		c.Footer = lang.T("Sent by %s through its client portal. Replies to this address are not read; please contact %s directly.", practiceName, practiceName)
	}

	var text, html strings.Builder
	text.Grow(textSize)
	html.Grow(htmlSize)
	writeText(&text, &c)
	writeHTML(&html, &c)
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

// catalogue is every language's text; built once from this repository's
// own messages (immutable).
var catalogue = locale.MustNew()

// Sizes the bodies are allocated with: a little more than a sign-in
// email's.
const (
	textSize = 1536
	htmlSize = 4096
)

// content is what a kind's renderer decides; layout.go lays it out.
type content struct {
	// Lang is the email's language (<html lang>).
	Lang    string
	Subject string
	// Preheader is the line mail clients show after the subject.
	Preheader string
	Greeting  string
	// Intro paragraphs come before the link.
	Intro []string
	// Button labels the link; empty means the email carries no link.
	Button string
	URL    string
	// CopyHint introduces the link written out under the button.
	CopyHint string
	// Notes come after the link: how long it works, how often, what to do
	// if it stops working.
	Notes    []string
	Practice string
	// Logo is the practice's logo (https), shown with the practice's name
	// as its text alternative; Accent the button's colour.
	Logo   string
	Accent string
	Footer string
}

// view is what a renderer reads.
type view struct {
	cmd      *Command
	practice string
	url      string
	lang     *locale.Lang
	// zone is the practice's time zone: link expiry in sign-in and
	// document emails is written in it.
	zone *time.Location
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

const clickNote = "The link opens a page with a button; nothing happens until you press it, so it is safe for your email provider to check the link first. If the link no longer works, that page tells you why and lets you ask for a fresh one."

func (v *view) requireLink() error {
	if v.url == "" {
		return fmt.Errorf("%w: %s email without a link URL", ErrBadCommand, v.cmd.Kind)
	}
	return nil
}

// until is the link's expiry in the practice's time zone (UTC for a
// practice that set none): "Tue 24 Nov, 08:05 CST".
func (v *view) until() (string, error) {
	if v.cmd.ExpiresAt.IsZero() {
		return "", fmt.Errorf("%w: %s email without expires_at", ErrBadCommand, v.cmd.Kind)
	}
	return v.lang.Date(v.cmd.ExpiresAt.In(v.zone), locale.Short), nil
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
	return v.lang.Duration(v.cmd.ExpiresAt.Sub(from))
}

// validity says how long a one-time link works.
func (v *view) validity(until string) string {
	if d := v.lifetime(); d != "" {
		return v.lang.T("This link works once and is valid for %s, until %s.", d, until)
	}
	return v.lang.T("This link works once, until %s.", until)
}

func renderSignin(v *view) (content, error) {
	if err := v.requireLink(); err != nil {
		return content{}, err
	}
	until, err := v.until()
	if err != nil {
		return content{}, err
	}
	l := v.lang
	return content{
		Subject:   l.T("Your sign-in link for %s (valid until %s)", v.practice, until),
		Preheader: l.T("Sign in to %s. The link works once, until %s.", v.practice, until),
		Intro:     []string{l.T("Here is your link to sign in to the client portal of %s.", v.practice)},
		Button:    l.T("Sign in to %s", v.practice),
		Notes: []string{
			v.validity(until) + " " + l.T("If you ask for another sign-in link, only the newest one works."),
			l.T(clickNote),
			l.T("If you did not ask for this link, you can ignore this email: nobody can sign in without it."),
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
	l := v.lang
	return content{
		Subject:   l.T("%s shared \u201c%s\u201d with you (link valid until %s)", v.practice, title, until),
		Preheader: l.T("%s shared a document with you. The link works once, until %s.", v.practice, until),
		Intro:     []string{l.T("%s shared a document with you: \u201c%s\u201d.", v.practice, title)},
		Button:    l.T("Open the document"),
		Notes:     []string{v.validity(until), l.T(clickNote)},
	}, nil
}

// appt is an appointment's times in its own zone, in words.
type appt struct {
	short     string // "Tue 1 Dec, 9:00 AM CST" (subjects)
	long      string // "Tuesday 1 December, 9:00 AM – 9:50 AM CST"
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
	l := v.lang
	start := a.StartsAt.In(loc)
	out := appt{short: l.Date(start, locale.DayTime), tele: a.Telehealth}
	if a.EndsAt != nil {
		out.long = l.Date(start, locale.LongDay) + " \u2013 " + l.Date(a.EndsAt.In(loc), locale.ClockTime)
	} else {
		out.long = l.Date(start, locale.LongDay) + " " + start.Format("MST")
	}
	if name := HeaderValue(a.ClinicianName); name != "" {
		out.with = l.T(" with %s", name)
	}
	if !v.cmd.ExpiresAt.IsZero() {
		out.linkUntil = l.Date(v.cmd.ExpiresAt.In(loc), locale.DayTime)
	}
	return out, nil
}

// telehealth returns the button and notes of an appointment email that
// carries the video link (none for in-person appointments or a command
// without a link).
func (v *view) telehealth(a appt) (button string, notes []string, err error) {
	l := v.lang
	if v.cmd.LinkID == "" {
		if a.tele {
			return "", []string{l.T("To join the video appointment, sign in to the client portal, or reply to this email to ask the practice for a link.")}, nil
		}
		return "", []string{l.T("This appointment is in person.")}, nil
	}
	if err := v.requireLink(); err != nil {
		return "", nil, err
	}
	reuse := l.T("You can use this link as often as you need: if you lose the connection, click it again to rejoin.")
	if a.linkUntil != "" {
		reuse = l.T("You can use this link as often as you need, until %s: if you lose the connection, click it again to rejoin.", a.linkUntil)
	}
	return l.T("Join the video appointment"), []string{reuse, l.T(clickNote)}, nil
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
	kind = v.lang.T("appointment")
	if a.tele {
		kind = v.lang.T("video appointment")
	}
	return a, button, notes, kind, nil
}

func renderAppointmentConfirmed(v *view) (content, error) {
	a, button, notes, kind, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	l := v.lang
	return content{
		Subject:   l.T("Appointment confirmed: %s%s \u2013 %s", a.short, a.with, v.practice),
		Preheader: l.T("Your %s on %s is confirmed.", kind, a.short),
		Intro:     []string{l.T("Your %s%s at %s is confirmed for %s.", kind, a.with, v.practice, a.long)},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentReminder(v *view) (content, error) {
	a, button, notes, kind, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	l := v.lang
	return content{
		Subject:   l.T("Reminder: your appointment on %s%s \u2013 %s", a.short, a.with, v.practice),
		Preheader: l.T("A reminder of your %s on %s.", kind, a.short),
		Intro:     []string{l.T("This is a reminder of your %s%s at %s on %s.", kind, a.with, v.practice, a.long)},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentRescheduled(v *view) (content, error) {
	a, button, notes, _, err := v.appointmentMail()
	if err != nil {
		return content{}, err
	}
	l := v.lang
	if button != "" {
		notes = append([]string{l.T("Your video link stays the same; it now works for the new time.")}, notes...)
	}
	return content{
		Subject:   l.T("Appointment moved to %s%s \u2013 %s", a.short, a.with, v.practice),
		Preheader: l.T("Your appointment now takes place on %s.", a.short),
		Intro:     []string{l.T("Your appointment%s at %s has moved. It now takes place on %s.", a.with, v.practice, a.long)},
		Button:    button,
		Notes:     notes,
	}, nil
}

func renderAppointmentCanceled(v *view) (content, error) {
	a, err := v.appointment()
	if err != nil {
		return content{}, err
	}
	l := v.lang
	notes := []string{}
	if a.tele {
		notes = append(notes, l.T("The video link of this appointment no longer works."))
	}
	return content{
		Subject:   l.T("Appointment canceled: %s%s \u2013 %s", a.short, a.with, v.practice),
		Preheader: l.T("Your appointment on %s has been canceled.", a.short),
		Intro:     []string{l.T("Your appointment%s at %s on %s has been canceled.", a.with, v.practice, a.long)},
		Notes:     notes,
	}, nil
}
