package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// Log keys.
const keyEventID = "event_id"

// devPages serves /dev (publish a sample sign-in request, or play a
// scenario of the panel: scenarios.go, panel.go) and /portal (a demo portal
// that verifies the ticket a redemption brings).
type devPages struct {
	js    jetstream.JetStream
	base  string
	jwks  []byte
	clock clock.Clock
	log   *slog.Logger
	// sink is the local inbox (nil when the stack sends through SES);
	// practices the practice directory the workers read.
	sink      *mailer.Sink
	practices practiceGetter
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
code,pre{background:#eef2f6;border-radius:4px;padding:.1rem .3rem;white-space:pre-wrap;word-break:break-all}
.scenarios{list-style:none;padding:0}.scenarios li{margin:0 0 1rem}.scenarios p{margin:.3rem 0 0}.scenarios button{margin-top:0}
.ok{color:#116329;font-weight:700}.bad{color:#a40e26;font-weight:700}
</style>`

var devTmpl = template.Must(template.New("dev").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>linkpipe dev</title>` + style + `</head><body><main>
<h1>linkpipe — dev mode</h1>
<p><a href="#scenarios">Scenarios</a> for every action kind are below the form.</p>
<p>Everything runs in this process: an embedded NATS server with JetStream, the issuer, the mailer (writing to a
local inbox instead of Amazon SES) and the redeemer.</p>
<ol><li>Send a sample sign-in request below (it is published to <code>actions.signin.requested</code>).</li>
<li>The <a href="/inbox">inbox</a> opens when the email arrives (a moment later); click its link.</li>
<li>Confirm, and the demo portal shows the verified ticket.</li></ol>
<form class="box" method="post" action="/dev/signin">
<label for="client">Client id</label><input id="client" name="client" value="client-1" pattern="[A-Za-z0-9_-]{1,64}" required>
<label for="name">Name</label><input id="name" name="name" value="Pat Example">
<label for="email">Email</label><input id="email" name="email" type="email" value="pat@example.com" required>
<label for="return_to">Portal page to land on</label><input id="return_to" name="return_to" value="/messages">
<button type="submit">Send a sign-in link</button>
</form>
{{if .Error}}<p class="bad">{{.Error}}</p>{{end}}
<h2 id="scenarios">Scenarios</h2>
<p>Each scenario publishes real actions for a fresh client, as a practice system would, and shows its emails as they
arrive and the timeline of its links. Where time matters, the scenario takes the shortcut (an appointment in 5 minutes,
one that is already over).</p>
<ul class="scenarios">{{range .Scenarios}}
<li><form method="post" action="/dev/scenarios/{{.Name}}"><button type="submit">{{.Title}}</button></form>
<p>{{.About}}</p></li>{{end}}
</ul>
{{if .Runs}}<h2>Recent runs</h2><ul>{{range .Runs}}<li><a href="/dev/runs/{{.ID}}">{{.Scenario.Title}}</a> ({{.Client}}, {{.Done}} of {{len .Scenario.Steps}} steps)</li>{{end}}</ul>{{end}}
<p>Publish from a shell instead: <code>go run ./cmd/linkpipe publish signin --practice demo --client client-2 --email sam@example.com</code></p>
<p>Other pages: <a href="/inbox">inbox</a> · <a href="/support">support view</a> (why can't a client get in?) · <a href="/.well-known/jwks.json">JWKS</a> · <a href="/metrics">metrics</a> · <a href="/readyz">readyz</a></p>
</main></body></html>`))

func (d *devPages) devPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	devTmpl.Execute(w, struct {
		Error     string
		Scenarios []*scenario
		Runs      []*run
	}{r.URL.Query().Get("error"), d.scenarios, d.runs.list()})
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

var portalTmpl = template.Must(template.New("portal").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Demo portal</title>` + style + `</head><body><main>
<h1>Demo client portal</h1>
<p>Page: <code>{{.Path}}</code></p>
{{if .Claims}}<p class="ok" id="verdict">Ticket verified against /.well-known/jwks.json</p>
<div class="box"><pre id="claims">{{.Claims}}</pre></div>
<p>A real portal would now start a session for <strong>{{.Sub}}</strong> that idles out after {{.Idle}} seconds.</p>
{{else}}<p class="bad" id="verdict">No valid ticket: {{.Error}}</p>{{end}}
<p><a href="/dev">Back to the dev page</a></p></main></body></html>`))

func (d *devPages) portal(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Path, Claims, Sub, Error string
		Idle                     int64
	}{Path: r.URL.Path}
	tok := r.URL.Query().Get("ticket")
	if tok == "" {
		data.Error = "this page was opened without ?ticket="
	} else if c, err := ticket.Verify(d.jwks, tok, ticket.Want{Issuer: d.base, Audience: d.base}, d.clock.Now()); err != nil {
		data.Error = err.Error()
	} else {
		pretty, _ := json.MarshalIndent(c, "", "  ")
		data.Claims = string(pretty)
		data.Sub = c.Subject
		data.Idle = int64(c.Idle)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	portalTmpl.Execute(w, data)
}
