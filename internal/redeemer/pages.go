package redeemer

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/linkpipe/linkpipe/events"
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
//     "Email me a new link";
//   - renewal answer (200): "If this link is on record, we've emailed a new
//     one", whatever the token.
const pageTemplates = `
{{define "head"}}<!doctype html>
<html lang="en">
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
h1{margin:0 0 12px;font-size:1.5rem;line-height:1.25}
p{margin:0 0 16px}
.when{font-weight:600}
form{margin:24px 0 8px}
button{display:block;width:100%;padding:14px 18px;border:0;border-radius:10px;background:#1f6f5c;color:#fff;
 font:inherit;font-weight:600;cursor:pointer}
button:hover,button:focus-visible{background:#18594a}
button:focus-visible{outline:3px solid #9fd6c6;outline-offset:2px}
.note{font-size:.9rem;color:#5b6774;margin-top:16px}
.code{font-size:.8rem;color:#5b6774;margin:20px 0 0}
</style>
</head>
<body>
<main class="card">
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
<p class="note">We ask you to press the button so that email security checks, which open links automatically, cannot use up your link.</p>
{{template "foot" .}}{{end}}

{{define "refusal"}}{{template "head" .}}
<h1>{{.Heading}}</h1>
<p class="reason">{{.Message}}</p>
{{- if .Action}}
<form method="post" action="{{.Action}}">
<button type="submit">Email me a new link</button>
</form>
<p class="note">We will send it to the email address your practice has on file.</p>
{{- end}}
<p class="code">Reason code: {{.Reason}}</p>
{{template "foot" .}}{{end}}

{{define "renewed"}}{{template "head" .}}
<h1>Check your email</h1>
<p>If this link is on record, we've emailed a new one to the address your practice has on file.</p>
<p class="note">It can take a minute or two to arrive. Use the newest email you receive; older links stop working.</p>
{{template "foot" .}}{{end}}

{{define "unavailable"}}{{template "head" .}}
<h1>Please try again in a minute</h1>
<p>Something went wrong on our side and we could not open your link just now. Your link has not been used. Please try again in a minute.</p>
{{template "foot" .}}{{end}}

{{define "limited"}}{{template "head" .}}
<h1>Too many requests</h1>
<p>Too many links were opened from your network just now. Please wait a minute and open your link again. Your link has not been used.</p>
{{template "foot" .}}{{end}}

{{define "forbidden"}}{{template "head" .}}
<h1>Please open the link from your email</h1>
<p>This request came from another website, so we did not act on it. Open the link straight from your email and press the button there.</p>
{{template "foot" .}}{{end}}
`

// pageData feeds every template; html/template escapes every field.
type pageData struct {
	Title    string
	Page     string
	Reason   string
	Practice string
	Heading  string
	Message  string
	When     string
	Button   string
	// Action is the form's target (confirm: the link; refusal: renew).
	Action string
	// redirectsTo is the origin the form's answer redirects to (the
	// portal, on a confirm page), allowed by the CSP's form-action.
	redirectsTo string
}

// csp is every page's Content-Security-Policy; form-action lets a form post
// only to the redeemer (and follow its redirect to the portal).
const csp = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

type pages struct {
	t *template.Template
}

func newPages() (*pages, error) {
	t, err := template.New("pages").Parse(pageTemplates)
	if err != nil {
		return nil, fmt.Errorf("redeemer: pages: %w", err)
	}
	return &pages{t: t}, nil
}

// render writes a whole page; it is rendered to memory first so a template
// error never leaves half a page.
func (p *pages) render(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if d.redirectsTo != "" {
		h.Set("Content-Security-Policy", csp+" "+d.redirectsTo)
	} else {
		h.Set("Content-Security-Policy", csp)
	}
	if err := p.t.ExecuteTemplate(&buf, name, d); err != nil {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "page error")
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// confirm renders the confirm page of a valid link.
func (r *Redeemer) confirm(w http.ResponseWriter, c *click) {
	name := r.cfg.Practices.Get(c.issued.PracticeID).Name
	d := pageData{Page: "confirm", Practice: name, Action: r.prefix + "/l/" + c.token,
		redirectsTo: origin(r.portalBase(r.cfg.Practices.Get(c.issued.PracticeID)))}
	switch c.issued.Purpose {
	case events.PurposeDocument:
		d.Title = "Open your document – " + name
		d.Heading = "Open your document"
		d.Message = name + " shared a document with you. Press the button to open it in your client portal."
		d.Button = "Open the document"
	case events.PurposeTelehealth:
		d.Title = "Join your video appointment – " + name
		d.Heading = "Join your video appointment"
		d.Message = "Your video appointment with " + name + ". Press the button to join it in your client portal."
		d.When = appointmentWhen(c.state)
		d.Button = "Join the appointment"
	default:
		d.Title = "Sign in – " + name
		d.Heading = "Sign in to your client portal"
		d.Message = "You asked to sign in to " + name + "'s client portal. Press the button to continue."
		d.Button = "Sign in"
	}
	r.pages.render(w, http.StatusOK, "confirm", d)
}

// headings are the refusal pages' titles, by reason.
var headings = map[string]string{
	events.ReasonExpired:     "This link has expired",
	events.ReasonUsed:        "This link has already been used",
	events.ReasonSuperseded:  "There is a newer link",
	events.ReasonRevoked:     "This link was turned off",
	events.ReasonCanceled:    "This appointment was canceled",
	events.ReasonNotYetValid: "This link is not active yet",
	events.ReasonNotFound:    "We could not find this link",
}

// refuse renders the refusal page: 404 for not_found, 410 otherwise. The
// renewal button appears whenever the link exists.
func (r *Redeemer) refuse(w http.ResponseWriter, c *click, reason string) {
	d := pageData{Reason: reason, Heading: headings[reason], Message: scope.Explain(reason)}
	if d.Heading == "" {
		d.Heading = "This link cannot be used"
	}
	d.Title = d.Heading
	if c.issued != nil {
		d.Practice = r.cfg.Practices.Get(c.issued.PracticeID).Name
		d.Action = r.prefix + "/l/" + c.token + "/renew"
	}
	status := http.StatusGone
	if reason == events.ReasonNotFound {
		status = http.StatusNotFound
	}
	r.pages.render(w, status, "refusal", d)
}

// appointmentWhen says when a telehealth appointment starts, in its zone.
func appointmentWhen(st *scope.State) string {
	if st == nil || st.Appointment == nil || st.Appointment.StartsAt == nil {
		return ""
	}
	loc, err := time.LoadLocation(st.Appointment.Timezone)
	if err != nil || st.Appointment.Timezone == "" {
		loc = time.UTC
	}
	t := st.Appointment.StartsAt.In(loc)
	return t.Format("Monday 2 January 2006 at 3:04 PM") + " (" + loc.String() + ")"
}
