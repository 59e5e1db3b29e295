package devstack

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// Log keys.
const keyEventID = "event_id"

// devPages serves /dev (publish a sample sign-in request, or play a
// scenario of the panel: scenarios.go, panel.go) and /portal (a demo portal
// that verifies the ticket a redemption brings), each in the browser's
// language (English or Spanish); the JSON of a run stays English.
type devPages struct {
	js    jetstream.JetStream
	cat   *locale.Catalog
	base  string
	jwks  []byte
	clock clock.Clock
	log   *slog.Logger
	// sink is the local inbox (nil when the stack sends through SES);
	// practices the practice directory the workers read.
	sink      *mailer.Sink
	practices practiceGetter
	// feedback is the local stand-in for SES's event queue (nil when the
	// stack sends through SES).
	feedback  *feedbackQueue
	scenarios []*scenario
	runs      runs
}

func (d *devPages) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /dev", d.devPage)
	// Forms publish: refused to cross-origin browsers (CSRF), as the
	// redeemer refuses its POSTs.
	cop := http.NewCrossOriginProtection()
	mux.Handle("POST /dev/signin", cop.Handler(http.HandlerFunc(d.publishSignin)))
	mux.Handle("POST "+scenariosPath+"{name}", cop.Handler(http.HandlerFunc(d.startScenario)))
	mux.Handle("POST "+runsPath+"{id}/steps/{n}", cop.Handler(http.HandlerFunc(d.takeStep)))
	mux.HandleFunc("GET "+runsPath+"{id}", d.runPage)
	mux.HandleFunc("GET /portal/", d.portal)
	mux.HandleFunc("GET /portal", d.portal)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dev", http.StatusFound)
	})
}

const style = `<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#1d2733;line-height:1.5}
h1{font-size:1.5rem}label{display:block;margin:.6rem 0 .2rem;font-weight:600}
input{width:100%;padding:.5rem;border:1px solid #9aa7b4;border-radius:6px;font-size:1rem;box-sizing:border-box}
button{margin-top:1rem;padding:.7rem 1.2rem;font-size:1rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;cursor:pointer}
.box{border:1px solid #d5dde5;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0;background:#f7f9fb}
code,pre{background:#eef2f6;border-radius:4px;padding:.1rem .3rem;white-space:pre-wrap;overflow-wrap:anywhere}
.scenarios{list-style:none;padding:0}.scenarios li{margin:0 0 1rem}.scenarios p{margin:.3rem 0 0}.scenarios button{margin-top:0}
.ok{color:#116329;font-weight:700}.bad{color:#a40e26;font-weight:700}
</style>`

// lang is the language of a page: the browser's (the dev pages belong to
// no practice).
func (d *devPages) lang(r *http.Request) *locale.Lang {
	return d.cat.ForPage(r.Header.Get("Accept-Language"), "")
}

// render writes template name of t in l, whole or not at all, saying its
// language (Content-Language) and that it follows Accept-Language (Vary).
func (d *devPages) render(w http.ResponseWriter, status int, l *locale.Lang, t *template.Template, name string, data any) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		d.log.Warn("dev: page", "page", name, "err", err)
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Language", l.Code())
	h.Set("Vary", "Accept-Language")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func esc(s string) template.HTML { return template.HTML(template.HTMLEscapeString(s)) }

// a is a link.
func a(href, text string) template.HTML {
	return template.HTML(`<a href="` + template.HTMLEscapeString(href) + `">` + template.HTMLEscapeString(text) + `</a>`)
}

// code is data shown as code (an id, an address, a path).
func code(s string) template.HTML {
	return template.HTML("<code>" + template.HTMLEscapeString(s) + "</code>")
}

// codeEn is an English identifier (a NATS subject, a command) shown as code.
func codeEn(s string) template.HTML {
	return template.HTML(`<code lang="en">` + template.HTMLEscapeString(s) + "</code>")
}

// english is English text inside a page in any language (an error from Go
// code, a reason from the ledger).
func english(s string) template.HTML {
	return template.HTML(`<span lang="en">` + template.HTMLEscapeString(s) + "</span>")
}

// subjectRe is a NATS subject of an action in a sentence.
var subjectRe = regexp.MustCompile(`actions(?:\.[a-z_]+)+`)

// markSubjects escapes a sentence, its NATS subjects as English code.
func markSubjects(s string) template.HTML {
	var b strings.Builder
	last := 0
	for _, m := range subjectRe.FindAllStringIndex(s, -1) {
		b.WriteString(template.HTMLEscapeString(s[last:m[0]]))
		b.WriteString(string(codeEn(s[m[0]:m[1]])))
		last = m[1]
	}
	b.WriteString(template.HTMLEscapeString(s[last:]))
	return template.HTML(b.String())
}

// devPage is /dev in a language.
type devPage struct {
	Lang                                  string
	Heading, Intro, Steps3                string
	Steps0, Steps1, Steps2                template.HTML
	Client, Name, Email, ReturnTo, Send   string
	Error                                 template.HTML
	Scenarios, ScenariosIntro, RecentRuns string
	Offered                               []scenarioLine
	Recent                                []runLine
	Shell                                 string
	Other                                 template.HTML
}

type scenarioLine struct {
	Name, Title string
	About       template.HTML
}

type runLine struct{ ID, Title, Progress string }

var devTmpl = template.Must(template.New("dev").Parse(`<!doctype html><html lang="{{.Lang}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>linkpipe dev</title>` + style + `</head><body><main>
<h1>{{.Heading}}</h1>
<p>{{.Steps0}}</p>
<p>{{.Intro}}</p>
<ol><li>{{.Steps1}}</li>
<li>{{.Steps2}}</li>
<li>{{.Steps3}}</li></ol>
<form class="box" method="post" action="/dev/signin">
<label for="client">{{.Client}}</label><input id="client" name="client" value="client-1" pattern="[A-Za-z0-9_-]{1,64}" required>
<label for="name">{{.Name}}</label><input id="name" name="name" value="Pat Example">
<label for="email">{{.Email}}</label><input id="email" name="email" type="email" value="pat@example.com" required>
<label for="return_to">{{.ReturnTo}}</label><input id="return_to" name="return_to" value="/messages">
<button type="submit">{{.Send}}</button>
</form>
{{if .Error}}<p class="bad">{{.Error}}</p>{{end}}
<h2 id="scenarios">{{.Scenarios}}</h2>
<p>{{.ScenariosIntro}}</p>
<ul class="scenarios">{{range .Offered}}
<li><form method="post" action="/dev/scenarios/{{.Name}}"><button type="submit">{{.Title}}</button></form>
<p>{{.About}}</p></li>{{end}}
</ul>
{{if .Recent}}<h2>{{.RecentRuns}}</h2><ul>{{range .Recent}}<li><a href="/dev/runs/{{.ID}}">{{.Title}}</a> {{.Progress}}</li>{{end}}</ul>{{end}}
<p>{{.Shell}} <code lang="en">go run ./cmd/linkpipe publish signin --practice demo --client client-2 --email sam@example.com</code></p>
<p>{{.Other}}</p>
</main></body></html>`))

func (d *devPages) devPage(w http.ResponseWriter, r *http.Request) {
	l := d.lang(r)
	p := devPage{
		Lang:    l.Code(),
		Heading: l.T("linkpipe — dev mode"),
		Steps0:  locale.WithHTML(l.T("There are %s for every action kind below the form.", locale.Slot(0)), a("#scenarios", l.T("scenarios"))),
		Intro:   l.T("Everything runs in this process: an embedded NATS server with JetStream, the issuer, the mailer (writing to a local inbox instead of Amazon SES) and the redeemer."),
		Steps1:  locale.WithHTML(l.T("Send a sample sign-in request below (it is published to %s).", locale.Slot(0)), codeEn("actions.signin.requested")),
		Steps2:  locale.WithHTML(l.T("The %s opens when the email arrives (a moment later); click its link.", locale.Slot(0)), a("/inbox", l.T("inbox"))),
		Steps3:  l.T("Confirm, and the demo portal shows the verified ticket."),
		Client:  l.T("Client id"), Name: l.T("Name"), Email: l.T("Email address"), ReturnTo: l.T("Portal page to land on"),
		Send:           l.T("Send a sign-in link"),
		Scenarios:      l.T("Scenarios"),
		ScenariosIntro: l.T("Each scenario publishes real actions for a fresh client, as a practice system would, and shows its emails as they arrive and the timeline of its links. Where time matters, the scenario takes the shortcut (an appointment in 5 minutes, one that is already over)."),
		RecentRuns:     l.T("Recent runs"),
		Shell:          l.T("Publish from a shell instead:"),
		Other: locale.WithHTML(l.T("Other pages: %s · %s (why can't a client get in?) · %s · %s · %s", locale.Slot(0), locale.Slot(1), locale.Slot(2), locale.Slot(3), locale.Slot(4)),
			a("/inbox", l.T("inbox")), a("/support", l.T("support view")), a("/.well-known/jwks.json", "JWKS"), a("/metrics", l.T("metrics")), a("/readyz", "readyz")),
	}
	if e := r.URL.Query().Get("error"); e != "" {
		p.Error = locale.WithHTML(l.T("Nothing was published: %s", locale.Slot(0)), english(e))
	}
	for _, sc := range d.scenarios {
		p.Offered = append(p.Offered, scenarioLine{Name: sc.Name, Title: sc.Title(l), About: markSubjects(sc.About(l))})
	}
	for _, run := range d.runs.list() {
		p.Recent = append(p.Recent, runLine{ID: run.ID, Title: run.Scenario.Title(l),
			Progress: l.T("(%s; steps done: %d of %d)", run.Client, run.Done, len(run.Scenario.Steps))})
	}
	d.render(w, http.StatusOK, l, devTmpl, "dev", p)
}

func (d *devPages) publishSignin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Redirect(w, r, "/dev?error="+template.URLQueryEscaper("form: "+err.Error()), http.StatusSeeOther)
		return
	}
	b := make([]byte, 8)
	rand.Read(b)
	a := &events.SigninRequested{
		Envelope: events.Envelope{EventID: "dev-" + hex.EncodeToString(b), PracticeID: DemoPractice},
		Client: events.Client{ID: strings.TrimSpace(r.PostFormValue("client")), Email: strings.TrimSpace(r.PostFormValue("email")),
			Name: strings.TrimSpace(r.PostFormValue("name"))},
		ReturnTo: strings.TrimSpace(r.PostFormValue("return_to")),
	}
	// The inbox waits for an email received from now on (it does not
	// refresh itself).
	since := d.clock.Now().UTC()
	if _, err := events.Publish(r.Context(), d.js, a); err != nil {
		http.Redirect(w, r, "/dev?error="+template.URLQueryEscaper(err.Error()), http.StatusSeeOther)
		return
	}
	d.log.Info("dev sign-in request published", keyEventID, a.EventID)
	http.Redirect(w, r, "/inbox?since="+since.Format(time.RFC3339Nano), http.StatusSeeOther)
}

var portalTmpl = template.Must(template.New("portal").Parse(`<!doctype html><html lang="{{.Lang}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{{.Title}}</title>` + style + `</head><body><main>
<h1>{{.Heading}}</h1>
<p>{{.Page}} <code>{{.Path}}</code></p>
{{if .Claims}}<p class="ok" id="verdict">{{.Verified}}</p>
<div class="box"><pre id="claims" lang="en">{{.Claims}}</pre></div>
<p>{{.Session}}</p>
{{else}}<p class="bad" id="verdict">{{.Error}}</p>{{end}}
<p><a href="/dev">{{.Back}}</a></p></main></body></html>`))

func (d *devPages) portal(w http.ResponseWriter, r *http.Request) {
	l := d.lang(r)
	data := struct {
		Lang, Title, Heading, Page, Path, Verified, Claims, Back string
		Session, Error                                           template.HTML
	}{Lang: l.Code(), Title: l.T("Demo portal"), Heading: l.T("Demo client portal"), Page: l.T("Page:"), Path: r.URL.Path,
		Back: l.T("Back to the dev page")}
	tok := r.URL.Query().Get("ticket")
	if tok == "" {
		data.Error = locale.WithHTML(l.T("No valid ticket: this page was opened without %s", locale.Slot(0)), code("?ticket="))
	} else if c, err := ticket.Verify(d.jwks, tok, ticket.Want{Issuer: d.base, Audience: d.base}, d.clock.Now()); err != nil {
		data.Error = locale.WithHTML(l.T("No valid ticket: %s", locale.Slot(0)), english(err.Error()))
	} else {
		pretty, _ := json.MarshalIndent(c, "", "  ")
		data.Claims = string(pretty)
		data.Verified = l.T("Ticket verified against %s", "/.well-known/jwks.json")
		data.Session = locale.WithHTML(l.T("A real portal would now start a session for %s that idles out after %s.", locale.Slot(0), locale.Slot(1)),
			template.HTML("<strong>"+template.HTMLEscapeString(c.Subject)+"</strong>"), esc(l.Duration(time.Duration(c.Idle)*time.Second)))
	}
	d.render(w, http.StatusOK, l, portalTmpl, "portal", data)
}
