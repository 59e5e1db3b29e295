package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// The scenario panel's routes.
const (
	scenariosPath = "/dev/scenarios/" // POST <name>: start a run
	runsPath      = "/dev/runs/"      // GET <id>, <id>.json; POST <id>/steps/<n>
)

// runView is what a run's page and its JSON show.
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
	// LedgerError says the ledger could not be read just now.
	LedgerError string    `json:"ledger_error,omitempty"`
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
}

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

// view gathers what a run's page shows: its emails from the inbox and its
// links' timeline from the ledger.
func (d *devPages) view(ctx context.Context, run *run) *runView {
	now := d.clock.Now()
	v := &runView{ID: run.ID, Scenario: run.Scenario.Name, Title: run.Scenario.Title, About: run.Scenario.About,
		Practice: run.Practice, Client: run.Client, Email: run.Email, Next: run.Done, Errors: run.Errors, At: now,
		Emails: []emailView{}, Links: []history.Status{}, Timeline: []history.Entry{}}
	for i, s := range run.Scenario.Steps {
		v.Steps = append(v.Steps, stepView{Label: s.Label, About: s.About, Done: i < run.Done})
	}
	if d.sink == nil {
		v.NoInbox = true
	} else if msgs, _, err := d.sink.Page(mailer.PageQuery{To: run.Email, Limit: mailer.MaxPageSize}); err == nil {
		for _, m := range slices.Backward(msgs) {
			v.Emails = append(v.Emails, emailView{ID: m.ID, At: m.At, Kind: m.Headers["X-Linkpipe-Kind"], Subject: m.Subject, Links: m.Links})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tl, err := history.Client(ctx, d.js, run.Practice, run.Client)
	if err != nil {
		v.LedgerError = "The ledger could not be read just now: " + err.Error()
		return v
	}
	v.Links = tl.Statuses(now)
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
	if run == nil {
		http.NotFound(w, r)
		return
	}
	v := d.view(r.Context(), run)
	w.Header().Set("Cache-Control", "no-store")
	if asJSON {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	name := "run"
	if r.URL.Query().Get("part") == "live" {
		name = "live" // the part the page refreshes
	}
	if err := runTmpl.ExecuteTemplate(w, name, v); err != nil {
		d.log.Warn("dev: run page", "err", err)
	}
}

var runTmpl = template.Must(template.New("run").Funcs(template.FuncMap{
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05 UTC") },
	"inc":   func(i int) int { return i + 1 },
}).Parse(`{{define "run"}}<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{{.Title}} · linkpipe dev</title>` + style + `
<style>
body{max-width:64rem}td.when{white-space:nowrap}td code{word-break:normal;overflow-wrap:anywhere}
.steps li{margin:.4rem 0}.done{color:#116329}
table{width:100%;border-collapse:collapse;font-size:.9rem}th,td{text-align:left;padding:.3rem .4rem;border-top:1px solid #d5dde5;vertical-align:top}
td{overflow-wrap:anywhere}.works{color:#116329;font-weight:700}.refused{color:#a40e26;font-weight:700}
form.inline{display:inline}form.inline button{margin-top:.4rem}
</style></head><body><main>
<p><a href="/dev">Back to the dev page</a></p>
<h1>{{.Title}}</h1>
<p>{{.About}}</p>
<p>Client <code>{{.Client}}</code> of practice <code>{{.Practice}}</code>, address <code>{{.Email}}</code>.
<a href="/support?practice={{.Practice}}&amp;client={{.Client}}">Support view</a> · <a href="{{.ID}}.json">As JSON</a></p>
<h2>Steps</h2>
<ol class="steps">{{$id := .ID}}{{$next := .Next}}{{range $i, $s := .Steps}}
<li>{{if $s.Done}}<span class="done">Done:</span> {{$s.Label}} <small>({{$s.About}})</small>
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
{{define "live"}}<h2>Emails</h2>
{{if .NoInbox}}<p>This stack sends through SES: no inbox to show.</p>
{{else if not .Emails}}<p>No email yet (they arrive within a second or two; reminders at their time).</p>
{{else}}<table><caption>The run's emails, oldest first</caption><thead><tr><th scope="col">Received</th><th scope="col">Kind</th><th scope="col">Subject</th><th scope="col">Link</th></tr></thead><tbody>
{{range .Emails}}<tr><td class="when">{{clock .At}}</td><td><code>{{.Kind}}</code></td><td><a href="/inbox/{{.ID}}">{{.Subject}}</a></td><td>{{range .Links}}<a href="{{.}}">open the link</a>{{else}}none{{end}}</td></tr>
{{end}}</tbody></table>{{end}}
<h2>Links</h2>
{{if .LedgerError}}<p class="bad">{{.LedgerError}}</p>
{{else if not .Links}}<p>No link yet.</p>
{{else}}{{range .Links}}<div class="box"><p><span class="{{if .Works}}works">Works{{else}}refused">Refused{{end}}</span>:
{{if .Purpose}}{{.Purpose}} link{{else}}link{{end}} <code>{{.LinkID}}</code></p>
<p>{{.Verdict}}</p>{{if .Todo}}<p><strong>What to do:</strong> {{.Todo}}</p>{{end}}</div>{{end}}
<table><caption>Timeline of the run's links, oldest first</caption><thead><tr><th scope="col">When</th><th scope="col">Link</th><th scope="col">What</th><th scope="col">Detail</th></tr></thead><tbody>
{{range .Timeline}}<tr><td class="when">{{clock .At}}</td><td><code>{{.LinkID}}</code></td><td><code>{{.What}}</code></td><td>{{.Detail}}</td></tr>
{{end}}</tbody></table>{{end}}
<p><small>As of {{clock .At}}.</small></p>{{end}}`))
