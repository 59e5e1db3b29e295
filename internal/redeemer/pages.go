package redeemer

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Page structure (what tests and the acceptance suite rely on):
//
//   - every page: <title>, <meta name="viewport">, inline CSS only, no
//     external assets, one <main class="card">;
//   - confirm page (200): <meta name="linkpipe-page" content="confirm">, the
//     practice name (class "practice"), an <h1> saying what the link is for,
//     and exactly one <form method="post" action="/l/<token>"> with one
//     <button>;
//   - refusal page (410, or 404 for not_found): <meta name="linkpipe-reason"
//     content="<code>">, an <h1> and a <p class="reason"> with scope.Explain in
//     plain words, and, when the link exists, one
//     <form method="post" action="/l/<token>/renew"> whose button says
//     "Email me a new link" (in English; pages are in the browser's
//     Accept-Language, then the practice's locale, then English);
//   - renewal answer (200): "If this link is on record, we've emailed a new
//     one", whatever the token.
const pageTemplates = `
{{define "head"}}<!doctype html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<meta name="referrer" content="no-referrer">
{{- if .Page}}
<meta name="linkpipe-page" content="{{.Page}}">{{end}}
{{- if .Reason}}
<meta name="linkpipe-reason" content="{{.Reason}}">{{end}}
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:24px 16px;
 background:#f3f5f7;color:#1d2733;font:17px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
.card{width:100%;max-width:30rem;background:#fff;border-radius:14px;padding:32px 28px;
 box-shadow:0 1px 3px rgba(16,24,40,.08),0 8px 24px rgba(16,24,40,.06)}
.practice{margin:0 0 8px;font-size:.95rem;font-weight:600;color:#3b6e8f;letter-spacing:.01em}
.logo{display:block;height:48px;width:auto;max-width:100%;margin:0 0 12px}
h1{margin:0 0 12px;font-size:1.5rem;line-height:1.25}
p{margin:0 0 16px}
.when{font-weight:600}
form{margin:24px 0 8px}
button{display:block;width:100%;padding:14px 18px;border:0;border-radius:10px;background:{{.Accent}};color:#fff;
 font:inherit;font-weight:600;cursor:pointer}
button:hover,button:focus-visible{background:{{.AccentHover}}}
button:focus-visible{outline:3px solid #9fd6c6;outline-offset:2px}
.note{font-size:.9rem;color:#5b6774;margin-top:16px}
.code{font-size:.8rem;color:#5b6774;margin:20px 0 0}
</style>
</head>
<body>
<main class="card">
{{- if .Logo}}
<img class="logo" src="{{.Logo}}" alt="{{.Practice}}">{{end}}
{{- if .Practice}}
<p class="practice">{{.Practice}}</p>{{end}}
{{end}}

{{define "foot"}}</main>
</body>
</html>
{{end}}

{{define "confirm"}}{{template "head" .}}
<h1>{{.Heading}}</h1>
<p>{{.Message}}</p>
{{- if .When}}
<p class="when">{{.When}}</p>{{end}}
<form method="post" action="{{.Action}}">
<button type="submit">{{.Button}}</button>
</form>
<p class="note">{{.Note}}</p>
{{template "foot" .}}{{end}}

{{define "refusal"}}{{template "head" .}}
<h1>{{.Heading}}</h1>
<p class="reason">{{.Message}}</p>
{{- if .Action}}
<form method="post" action="{{.Action}}">
<button type="submit">{{.Button}}</button>
</form>
<p class="note">{{.Note}}</p>
{{- end}}
<p class="code">{{.Code}}</p>
{{template "foot" .}}{{end}}

{{define "message"}}{{template "head" .}}
<h1>{{.Heading}}</h1>
<p>{{.Message}}</p>
{{- if .Note}}
<p class="note">{{.Note}}</p>{{end}}
{{template "foot" .}}{{end}}
`

// pageData feeds every template; html/template escapes every field.
type pageData struct {
	// Lang is the page's language (<html lang>).
	Lang     string
	Title    string
	Page     string
	Reason   string
	Practice string
	// Logo is the practice's logo (https); Accent and AccentHover the
	// button's colours (the practice's accent, made WCAG AA).
	Logo        string
	Accent      string
	AccentHover string
	Heading     string
	Message     string
	When        string
	Button      string
	Note        string
	// Code is the refusal's reason code in words ("Reason code: used").
	Code string
	// Action is the form's target (confirm: the link; refusal: renew).
	Action string
	// redirectsTo is the origin the form's answer redirects to (the
	// portal, on a confirm page), allowed by the CSP's form-action.
	redirectsTo string
}

// csp is every page's Content-Security-Policy; form-action lets a form post
// only to the redeemer (and follow its redirect to the portal).
const csp = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// defaultAccent is the pages' button colour for a practice that chose none.
const defaultAccent = "#1f6f5c"

type pages struct {
	t   *template.Template
	cat *locale.Catalog
}

func newPages() (*pages, error) {
	t, err := template.New("pages").Parse(pageTemplates)
	if err != nil {
		return nil, fmt.Errorf("redeemer: pages: %w", err)
	}
	cat, err := locale.New()
	if err != nil {
		return nil, fmt.Errorf("redeemer: pages: %w", err)
	}
	return &pages{t: t, cat: cat}, nil
}

// page starts a page's data for a request: its language (the browser's
// Accept-Language, then the practice's locale, then English) and the
// practice's name and branding (p is nil when no practice is known).
func (pg *pages) page(req *http.Request, p *practice.Settings) (pageData, *locale.Lang) {
	practiceLocale := ""
	d := pageData{Accent: defaultAccent}
	if p != nil {
		practiceLocale = p.Locale
		d.Practice = p.Name
		d.Logo = p.LogoURL
		d.Accent = practice.Accessible(p.AccentColor, defaultAccent)
	}
	d.AccentHover = practice.Darker(d.Accent, 0.2)
	accept := ""
	if req != nil {
		accept = req.Header.Get("Accept-Language")
	}
	l := pg.cat.ForPage(accept, practiceLocale)
	d.Lang = l.Code()
	return d, l
}

// render writes a whole page; it is rendered to memory first so a template
// error never leaves half a page.
func (pg *pages) render(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept-Language")
	policy := csp
	if d.redirectsTo != "" {
		policy += " " + d.redirectsTo
	}
	if o := origin(d.Logo); d.Logo != "" && strings.HasPrefix(o, "https://") {
		policy += "; img-src " + o
	}
	h.Set("Content-Security-Policy", policy)
	if err := pg.t.ExecuteTemplate(&buf, name, d); err != nil {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "page error")
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Language", d.Lang)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// message renders one of the pages that only say something: a heading, a
// paragraph and a note, each already in the page's language.
func (pg *pages) message(w http.ResponseWriter, req *http.Request, status int, heading, message, note string) {
	d, _ := pg.page(req, nil)
	d.Title, d.Heading, d.Message, d.Note = heading, heading, message, note
	pg.render(w, status, "message", d)
}

// confirm renders the confirm page of a valid link.
func (r *Redeemer) confirm(w http.ResponseWriter, req *http.Request, c *click) {
	p := r.cfg.Practices.Get(c.issued.PracticeID)
	d, l := r.pages.page(req, &p)
	name := p.Name
	d.Page = "confirm"
	d.Action = r.prefix + "/l/" + c.token
	d.redirectsTo = origin(r.portalBase(p))
	d.Note = l.T("We ask you to press the button so that email security checks, which open links automatically, cannot use up your link.")
	switch c.issued.Purpose {
	case events.PurposeDocument:
		d.Title = l.T("Open your document \u2013 %s", name)
		d.Heading = l.T("Open your document")
		d.Message = l.T("%s shared a document with you. Press the button to open it in your client portal.", name)
		d.Button = l.T("Open the document")
	case events.PurposeTelehealth:
		d.Title = l.T("Join your video appointment \u2013 %s", name)
		d.Heading = l.T("Join your video appointment")
		d.Message = l.T("Your video appointment with %s. Press the button to join it in your client portal.", name)
		d.When = appointmentWhen(l, c.state)
		d.Button = l.T("Join the appointment")
	default:
		d.Title = l.T("Sign in \u2013 %s", name)
		d.Heading = l.T("Sign in to your client portal")
		d.Message = l.T("You asked to sign in to %s's client portal. Press the button to continue.", name)
		d.Button = l.T("Sign in")
	}
	r.pages.render(w, http.StatusOK, "confirm", d)
}

// heading is a refusal page's title, by reason.
func heading(l *locale.Lang, reason string) string {
	switch reason {
	case events.ReasonExpired:
		return l.T("This link has expired")
	case events.ReasonUsed:
		return l.T("This link has already been used")
	case events.ReasonSuperseded:
		return l.T("There is a newer link")
	case events.ReasonRevoked:
		return l.T("This link was turned off")
	case events.ReasonCanceled:
		return l.T("This appointment was canceled")
	case events.ReasonNotYetValid:
		return l.T("This link is not active yet")
	case events.ReasonNotFound:
		return l.T("We could not find this link")
	}
	return l.T("This link cannot be used")
}

// refuse renders the refusal page: 404 for not_found, 410 otherwise. The
// renewal button appears whenever the link exists.
func (r *Redeemer) refuse(w http.ResponseWriter, req *http.Request, c *click, reason string) {
	var p *practice.Settings
	if c.issued != nil {
		s := r.cfg.Practices.Get(c.issued.PracticeID)
		p = &s
	}
	d, l := r.pages.page(req, p)
	d.Reason = reason
	d.Heading = heading(l, reason)
	d.Message = l.T(scope.Explain(reason))
	d.Title = d.Heading
	d.Code = l.T("Reason code: %s", reason)
	if c.issued != nil {
		d.Action = r.prefix + "/l/" + c.token + "/renew"
		d.Button = l.T("Email me a new link")
		d.Note = l.T("We will send it to the email address your practice has on file.")
	}
	status := http.StatusGone
	if reason == events.ReasonNotFound {
		status = http.StatusNotFound
	}
	r.pages.render(w, status, "refusal", d)
}

// renewed answers a renewal request, whatever the token.
func (r *Redeemer) renewed(w http.ResponseWriter, req *http.Request) {
	_, l := r.pages.page(req, nil)
	r.pages.message(w, req, http.StatusOK, l.T("Check your email"),
		l.T("If this link is on record, we've emailed a new one to the address your practice has on file."),
		l.T("It can take a minute or two to arrive. Use the newest email you receive; older links stop working."))
}

// unavailablePage answers when the link could not be looked up.
func (r *Redeemer) unavailablePage(w http.ResponseWriter, req *http.Request) {
	_, l := r.pages.page(req, nil)
	r.pages.message(w, req, http.StatusServiceUnavailable, l.T("Please try again in a minute"),
		l.T("Something went wrong on our side and we could not open your link just now. Your link has not been used. Please try again in a minute."), "")
}

// limited answers a click over the per-network limit.
func (r *Redeemer) limited(w http.ResponseWriter, req *http.Request) {
	_, l := r.pages.page(req, nil)
	r.pages.message(w, req, http.StatusTooManyRequests, l.T("Too many requests"),
		l.T("Too many links were opened from your network just now. Please wait a minute and open your link again. Your link has not been used."), "")
}

// forbidden answers a cross-origin form post.
func (r *Redeemer) forbidden(w http.ResponseWriter, req *http.Request) {
	_, l := r.pages.page(req, nil)
	r.pages.message(w, req, http.StatusForbidden, l.T("Please open the link from your email"),
		l.T("This request came from another website, so we did not act on it. Open the link straight from your email and press the button there."), "")
}

// appointmentWhen says when a telehealth appointment starts, in its zone.
func appointmentWhen(l *locale.Lang, st *scope.State) string {
	if st == nil || st.Appointment == nil || st.Appointment.StartsAt == nil {
		return ""
	}
	loc, err := time.LoadLocation(st.Appointment.Timezone)
	if err != nil || st.Appointment.Timezone == "" {
		loc = time.UTC
	}
	return l.Date(st.Appointment.StartsAt.In(loc), locale.LongDate) + " (" + loc.String() + ")"
}
