package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// The scenario panel's routes.
const (
	scenariosPath = "/dev/scenarios/" // POST <name>: start a run
	runsPath      = "/dev/runs/"      // GET <id>, <id>.json; POST <id>/steps/<n>
)

// runView is what a run's JSON shows, in English whatever the browser
// speaks; its page shows it in the page's language (runPage).
type runView struct {
	ID       string `json:"id"`
	Scenario string `json:"scenario"`
	Title    string `json:"title"`
	About    string `json:"about"`
	Practice string `json:"practice"`
	Client   string `json:"client"`
	Email    string `json:"email"`
	// Steps are the scenario's steps; Next is the index of the next one
	// (len(Steps) when all ran).
	Steps  []stepView `json:"steps"`
	Next   int        `json:"next"`
	Errors []string   `json:"errors,omitempty"`
	// Emails are the run's emails in the local inbox, oldest first (none
	// when the stack sends through SES).
	Emails []emailView `json:"emails"`
	// Links are the run's links, each with today's verdict; Timeline every
	// line of their history, oldest first.
	Links    []history.Status `json:"links"`
	Timeline []history.Entry  `json:"timeline"`
	// LedgerError says the ledger could not be read just now (ledgerErr
	// is why).
	LedgerError string `json:"ledger_error,omitempty"`
	ledgerErr   error
	At          time.Time `json:"at"`
	NoInbox     bool      `json:"no_inbox,omitempty"`
}

type stepView struct {
	Label string `json:"label"`
	About string `json:"about"`
	Done  bool   `json:"done"`
}

type emailView struct {
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Subject string    `json:"subject"`
	Links   []string  `json:"links"`
	// lang is the email's language (SinkMessage.Lang; "" unknown).
	lang string
}

// Lang is the email's language ("" unknown): its subject's lang on a page.
func (e emailView) Lang() string { return e.lang }

func (d *devPages) startScenario(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	i := slices.IndexFunc(d.scenarios, func(s *scenario) bool { return s.Name == name })
	if i < 0 {
		http.Redirect(w, r, "/dev?error="+template.URLQueryEscaper("no scenario "+name), http.StatusSeeOther)
		return
	}
	run := newRun(d.scenarios[i], d.clock.Now())
	d.runs.add(run)
	// The first step runs now; an error shows on the run's page.
	_ = d.runs.step(r.Context(), d, run.ID, 0)
	d.log.Info("dev scenario started", "scenario", name, "run", run.ID)
	http.Redirect(w, r, runsPath+run.ID, http.StatusSeeOther)
}

func (d *devPages) takeStep(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, err := strconv.Atoi(r.PathValue("n"))
	if err == nil {
		err = d.runs.step(r.Context(), d, id, n)
	}
	if d.runs.get(id) == nil {
		http.NotFound(w, r)
		return
	}
	if errors.Is(err, errStepOrder) {
		// A double submit or a stale page: show the run as it is.
		http.Redirect(w, r, runsPath+id, http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, runsPath+id, http.StatusSeeOther)
}

// view gathers what a run's JSON and page show, in English but for the
// links' verdicts, which are in verdicts (English for the JSON): its
// emails from the inbox and its links' timeline from the ledger.
func (d *devPages) view(ctx context.Context, run *run, verdicts *locale.Lang) *runView {
	now := d.clock.Now()
	en := d.cat.English()
	v := &runView{ID: run.ID, Scenario: run.Scenario.Name, Title: run.Scenario.Title(en), About: run.Scenario.About(en),
		Practice: run.Practice, Client: run.Client, Email: run.Email, Next: run.Done, At: now,
		Emails: []emailView{}, Links: []history.Status{}, Timeline: []history.Entry{}}
	for i, s := range run.Scenario.Steps {
		v.Steps = append(v.Steps, stepView{Label: s.Label(en), About: s.About(en), Done: i < run.Done})
	}
	for _, e := range run.Errors {
		v.Errors = append(v.Errors, run.Scenario.Steps[e.Step].Label(en)+": "+e.Err.Error())
	}
	if d.sink == nil {
		v.NoInbox = true
	} else if msgs, _, err := d.sink.Page(mailer.PageQuery{To: run.Email, Limit: mailer.MaxPageSize}); err == nil {
		for _, m := range slices.Backward(msgs) {
			v.Emails = append(v.Emails, emailView{ID: m.ID, At: m.At, Kind: m.Headers["X-Linkpipe-Kind"], Subject: m.Subject, Links: m.Links, lang: m.Lang()})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tl, err := history.Client(ctx, d.js, run.Practice, run.Client)
	if err != nil {
		v.LedgerError, v.ledgerErr = en.T("The ledger could not be read just now: %s", err.Error()), err
		return v
	}
	v.Links = tl.StatusesIn(now, verdicts)
	v.Timeline = append(v.Timeline, tl.Entries...)
	return v
}

func (d *devPages) runPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	asJSON := false
	if len(id) > 5 && id[len(id)-5:] == ".json" {
		id, asJSON = id[:len(id)-5], true
	}
	run := d.runs.get(id)
	if run == nil && asJSON {
		http.NotFound(w, r)
		return
	}
	l := d.lang(r)
	if run == nil {
		d.render(w, http.StatusNotFound, l, runTmpl, "missing", struct {
			Lang, Title, Back string
			Message           template.HTML
		}{l.Code(), l.T("No such run"), l.T("Back to the dev page"),
			locale.WithHTML(l.T("There is no run %s in this process: runs are kept in memory and go when linkpipe dev stops.", locale.Slot(0)), code(id))})
		return
	}
	if asJSON {
		l = d.cat.English()
	}
	v := d.view(r.Context(), run, l)
	w.Header().Set("Cache-Control", "no-store")
	if asJSON {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	name := "run"
	if r.URL.Query().Get("part") == "live" {
		name = "live" // the part the page refreshes
	}
	d.render(w, http.StatusOK, l, runTmpl, name, newRunPage(l, run, v))
}

// runPage is a run's page in a language: its own sentences (X, the
// scenario's texts), and the run's facts as recorded. The ledger's
// verdicts and advice are in the page's language (history.StatusesIn); the
// timeline's details are history's English (lang="en").
type runPage struct {
	Lang string
	X    runText
	V    *runView
	// Title, About and Steps are the scenario's, in the page's language.
	Title  string
	About  template.HTML
	Who    template.HTML
	Steps  []stepPage
	Errors []template.HTML
	Links  []linkPage
	// LedgerError says the ledger could not be read, and why.
	LedgerError template.HTML
	AsOf        string
}

type stepPage struct {
	Label string
	About template.HTML
	Done  bool
}

// linkPage is a link's verdict with what kind of link it is, in words.
type linkPage struct {
	history.Status
	Kind string
}

// runText is every fixed sentence of a run's page.
type runText struct {
	Back, SupportView, AsJSON, Steps, Done                   string
	Emails, NoInbox, NoEmail, EmailsCaption                  string
	Received, Kind, Subject, Link, OpenLink, None            string
	Links, NoLink, Works, Refused, WhatToDo, TimelineCaption string
	When, What, Detail                                       string
}

func newRunPage(l *locale.Lang, run *run, v *runView) *runPage {
	p := &runPage{Lang: l.Code(), V: v, Title: run.Scenario.Title(l), About: markSubjects(run.Scenario.About(l)),
		Who:  locale.WithHTML(l.T("Client %s of practice %s, address %s.", locale.Slot(0), locale.Slot(1), locale.Slot(2)), code(v.Client), code(v.Practice), code(v.Email)),
		AsOf: l.T("As of %s.", clockTime(v.At)),
		X: runText{
			Back:            l.T("Back to the dev page"),
			SupportView:     l.T("Support view"),
			AsJSON:          l.T("As JSON"),
			Steps:           l.T("Steps"),
			Done:            l.T("Done:"),
			Emails:          l.T("Emails"),
			NoInbox:         l.T("This stack sends through SES: no inbox to show."),
			NoEmail:         l.T("No email yet (they arrive within a second or two; reminders at their time)."),
			EmailsCaption:   l.T("The run's emails, oldest first"),
			Received:        l.T("Received"),
			Kind:            l.T("Kind"),
			Subject:         l.T("Subject"),
			Link:            l.T("Link"),
			OpenLink:        l.T("open the link"),
			None:            l.T("none"),
			Links:           l.T("Links"),
			NoLink:          l.T("No link yet."),
			Works:           l.T("Works"),
			Refused:         l.T("Refused"),
			WhatToDo:        l.T("What to do:"),
			TimelineCaption: l.T("Timeline of the run's links, oldest first"),
			When:            l.T("When"),
			What:            l.T("What"),
			Detail:          l.T("Detail"),
		}}
	for i, s := range run.Scenario.Steps {
		p.Steps = append(p.Steps, stepPage{Label: s.Label(l), About: markSubjects(s.About(l)), Done: i < run.Done})
	}
	for _, e := range run.Errors {
		why := english(e.Err.Error())
		switch {
		case errors.Is(e.Err, errSolNotReady):
			why = esc(l.T(solNotReady))
		case errors.Is(e.Err, errNoEmailYet):
			why = esc(l.T(noEmailYet))
		case errors.Is(e.Err, errNoSink):
			why = esc(l.T(noSink))
		}
		p.Errors = append(p.Errors, locale.WithHTML(locale.Slot(0)+": "+locale.Slot(1), esc(run.Scenario.Steps[e.Step].Label(l)), why))
	}
	for _, s := range v.Links {
		p.Links = append(p.Links, linkPage{Status: s, Kind: linkKind(l, s.Purpose)})
	}
	if v.ledgerErr != nil {
		p.LedgerError = locale.WithHTML(l.T("The ledger could not be read just now: %s", locale.Slot(0)), english(v.ledgerErr.Error()))
	}
	return p
}

// linkKind says what a link is for.
func linkKind(l *locale.Lang, purpose string) string {
	switch purpose {
	case events.PurposeSignin:
		return l.T("sign-in link")
	case events.PurposeDocument:
		return l.T("document link")
	case events.PurposeTelehealth:
		return l.T("video appointment link")
	}
	return l.T("link")
}

// clockTime is a time of day on the run's page: the same in every language.
func clockTime(t time.Time) string { return t.UTC().Format("15:04:05 UTC") }

// token is an English identifier of the ledger or the mailer (an event
// name, an email kind) shown as code that wraps only after its '_', ':' and
// '.' (so a phone's narrow column never splits "issued" in two).
func token(s string) template.HTML {
	var b strings.Builder
	b.WriteString(`<code class="token" lang="en">`)
	for _, r := range s {
		b.WriteString(template.HTMLEscapeString(string(r)))
		if r == '_' || r == ':' || r == '.' {
			b.WriteString("<wbr>")
		}
	}
	b.WriteString("</code>")
	return template.HTML(b.String())
}

var runTmpl = template.Must(template.New("run").Funcs(template.FuncMap{
	"clock": clockTime,
	"token": token,
}).Parse(`{{define "run"}}<!doctype html><html lang="{{.Lang}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{{.Title}} · linkpipe dev</title>` + style + `
<style>
body{max-width:64rem}td code{word-break:normal;overflow-wrap:anywhere}td code.token{overflow-wrap:normal}
td.when{overflow-wrap:normal}@media (min-width:40rem){td.when,td code.token{white-space:nowrap}}
.steps li{margin:.4rem 0}.done{color:#116329}
table{width:100%;border-collapse:collapse;font-size:.9rem}th,td{text-align:left;padding:.3rem .4rem;border-top:1px solid #d5dde5;vertical-align:top}
td{overflow-wrap:anywhere}.works{color:#116329;font-weight:700}.refused{color:#a40e26;font-weight:700}
form.inline{display:inline}form.inline button{margin-top:.4rem}
</style></head><body><main>
<p><a href="/dev">{{.X.Back}}</a></p>
<h1>{{.Title}}</h1>
<p>{{.About}}</p>
<p>{{.Who}}
<a href="/support?practice={{.V.Practice}}&amp;client={{.V.Client}}">{{.X.SupportView}}</a> · <a href="{{.V.ID}}.json">{{.X.AsJSON}}</a></p>
<h2>{{.X.Steps}}</h2>
<ol class="steps">{{$id := .V.ID}}{{$next := .V.Next}}{{$x := .X}}{{range $i, $s := .Steps}}
<li>{{if $s.Done}}<span class="done">{{$x.Done}}</span> {{$s.Label}} <small>({{$s.About}})</small>
{{else if eq $i $next}}<form class="inline" method="post" action="/dev/runs/{{$id}}/steps/{{$i}}"><button type="submit">{{$s.Label}}</button></form> <small>{{$s.About}}</small>
{{else}}{{$s.Label}} <small>({{$s.About}})</small>{{end}}</li>{{end}}
</ol>
{{range .Errors}}<p class="bad" role="alert">{{.}}</p>{{end}}
<div id="live" aria-live="polite">{{template "live" .}}</div>
</main>
<script>
// Refresh the emails and the timeline every 2 seconds (the steps stay put).
setInterval(function(){fetch(location.pathname+"?part=live",{cache:"no-store"}).then(function(r){return r.ok?r.text():null}).then(function(h){
 if(h!==null){var el=document.getElementById("live");if(el.innerHTML!==h){el.innerHTML=h}}}).catch(function(){})},2000);
</script>
</body></html>{{end}}
{{define "live"}}{{$x := .X}}<h2>{{$x.Emails}}</h2>
{{if .V.NoInbox}}<p>{{$x.NoInbox}}</p>
{{else if not .V.Emails}}<p>{{$x.NoEmail}}</p>
{{else}}<table><caption>{{$x.EmailsCaption}}</caption><thead><tr><th scope="col">{{$x.Received}}</th><th scope="col">{{$x.Kind}}</th><th scope="col">{{$x.Subject}}</th><th scope="col">{{$x.Link}}</th></tr></thead><tbody>
{{range .V.Emails}}<tr><td class="when">{{clock .At}}</td><td>{{token .Kind}}</td><td{{with .Lang}} lang="{{.}}"{{end}}><a href="/inbox/{{.ID}}">{{.Subject}}</a></td><td>{{range .Links}}<a href="{{.}}">{{$x.OpenLink}}</a>{{else}}{{$x.None}}{{end}}</td></tr>
{{end}}</tbody></table>{{end}}
<h2>{{$x.Links}}</h2>
{{if .LedgerError}}<p class="bad">{{.LedgerError}}</p>
{{else if not .Links}}<p>{{$x.NoLink}}</p>
{{else}}{{range .Links}}<div class="box"><p><span class="{{if .Works}}works">{{$x.Works}}{{else}}refused">{{$x.Refused}}{{end}}</span>:
{{.Kind}} <code>{{.LinkID}}</code></p>
<p>{{.Verdict}}</p>{{if .Todo}}<p><strong>{{$x.WhatToDo}}</strong> {{.Todo}}</p>{{end}}</div>{{end}}
<table><caption>{{$x.TimelineCaption}}</caption><thead><tr><th scope="col">{{$x.When}}</th><th scope="col">{{$x.Link}}</th><th scope="col">{{$x.What}}</th><th scope="col">{{$x.Detail}}</th></tr></thead><tbody>
{{range .V.Timeline}}<tr><td class="when">{{clock .At}}</td><td><code>{{.LinkID}}</code></td><td>{{token .What}}</td><td lang="en">{{.Detail}}</td></tr>
{{end}}</tbody></table>{{end}}
<p><small>{{.AsOf}}</small></p>{{end}}
{{define "missing"}}<!doctype html><html lang="{{.Lang}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{{.Title}} · linkpipe dev</title>` + style + `</head><body><main>
<p><a href="/dev">{{.Back}}</a></p>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</main></body></html>{{end}}`))
