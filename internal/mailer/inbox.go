package mailer

import (
	"bytes"
	"html/template"
	"net/http"
	"sort"

	"github.com/linkpipe/linkpipe/internal/locale"
)

// The inbox pages: plain HTML and CSS, no script, no external assets.

type inboxRow struct {
	Href, To, Subject, When, Link string
	// Lang is the email's language ("" unknown).
	Lang string
}

// inboxText is every sentence of the inbox pages, in the page's language.
type inboxText struct {
	Lang, Sink, BackToInbox, Intro, CheckNew, NoRefresh, ForScripts, NotYet string
	Emails, To, Subject, Received, Link, OpenLink, NoEmail, NotFound        string
	LinksIn, HTML, HTMLTitle, Plain                                         string
}

func inboxTexts(l *locale.Lang) inboxText {
	return inboxText{
		Lang:        l.Code(),
		Sink:        l.T("linkpipe mail sink"),
		BackToInbox: l.T("inbox"),
		Intro:       l.T("Emails the mailer sends appear here, newest first."),
		CheckNew:    l.T("Check for new email"),
		NoRefresh:   l.T("(this page does not refresh itself)."),
		ForScripts:  l.T("For scripts:"),
		NotYet:      l.T("The email you asked for has not arrived yet; check again in a moment."),
		Emails:      l.T("Emails"),
		To:          l.T("To"),
		Subject:     l.T("Subject"),
		Received:    l.T("Received"),
		Link:        l.T("Link"),
		OpenLink:    l.T("Open link"),
		NoEmail:     l.T("No email yet. Ask for a sign-in link and it shows up here within a second."),
		NotFound:    l.T("There is no email with that id in this inbox."),
		LinksIn:     l.T("Links in this email"),
		HTML:        l.T("HTML"),
		HTMLTitle:   l.T("HTML version of the email"),
		Plain:       l.T("Plain text"),
	}
}

type listPage struct {
	X     inboxText
	Title string
	Back  string
	// Self is the inbox's own address (the "check for new email" link).
	Self string
	JSON string
	Rows []inboxRow
	// NoneYet says that the email the request waited for (?since=) has not
	// arrived.
	NoneYet bool
}

// header is one header of an email: its name (English, as sent) and value;
// Lang is the value's language when it is the email's text (the subject).
type header struct{ Name, Value, Lang string }

type segment struct{ Text, URL string }

type messagePage struct {
	X     inboxText
	Title string
	Back  string
	M     SinkMessage
	// Lang is the email's language ("" unknown).
	Lang    string
	Headers []header
	Text    []segment
	SrcDoc  string
}

// inboxCSP keeps the inbox inert: no script anywhere, styles inline only;
// the email's HTML is further confined to a sandboxed frame.
const inboxCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; form-action 'none'; frame-ancestors 'self'"

func writePage(w http.ResponseWriter, status int, t *template.Template, lang string, data any) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		http.Error(w, "inbox page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", lang)
	w.Header().Set("Vary", "Accept-Language")
	w.Header().Set("Content-Security-Policy", inboxCSP)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// linkify splits text into plain runs and URLs, for clickable links in the
// escaped text view.
func linkify(text string) []segment {
	var out []segment
	last := 0
	for _, loc := range urlPattern.FindAllStringIndex(text, -1) {
		if loc[0] > last {
			out = append(out, segment{Text: text[last:loc[0]]})
		}
		out = append(out, segment{URL: text[loc[0]:loc[1]]})
		last = loc[1]
	}
	if last < len(text) {
		out = append(out, segment{Text: text[last:]})
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

const pageHead = `<!DOCTYPE html>
<html lang="{{.X.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · {{.X.Sink}}</title>
<style>
body{margin:0;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2933;background:#f4f5f7}
header{background:#1f2933;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline}
header a{color:#cbd2d9}
header h1{font-size:17px;margin:0}
main{max-width:980px;margin:24px auto;padding:0 16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:16px 20px;margin-bottom:16px}
table{width:100%;border-collapse:collapse}
.scroll{overflow-x:auto}
@media (max-width:640px){.scroll table,.scroll tbody,.scroll tr,.scroll td{display:block}
 .scroll thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
 .scroll tr{border-bottom:1px solid #e4e7eb;padding:8px 0}.scroll td{border:0;padding:2px 0}}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#52606d}
td.when{white-space:nowrap;color:#52606d}
a{color:#1f6feb}
.btn{display:inline-block;background:#1f6feb;color:#fff;text-decoration:none;padding:4px 12px;border-radius:4px;font-size:13px;white-space:nowrap}
.muted{color:#52606d}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:#52606d}
dd{margin:0;overflow-wrap:anywhere}
iframe{width:100%;height:560px;border:1px solid #e4e7eb;border-radius:6px;background:#fff}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:13px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
ul.links{margin:0;padding-left:20px}
ul.links li{word-break:break-all}
h2{font-size:14px;text-transform:uppercase;letter-spacing:.04em;color:#52606d;margin:0 0 8px}
</style>
</head>
<body>
<header><h1>{{.X.Sink}}</h1>{{if .Back}}<a href="{{.Back}}">&larr; {{.X.BackToInbox}}</a>{{end}}</header>
<main>
`

const pageFoot = `</main>
</body>
</html>
`

var listTmpl = template.Must(template.New("list").Parse(pageHead + `
<div class="card">
<p class="muted" style="margin:0">{{.X.Intro}} <a href="{{.Self}}">{{.X.CheckNew}}</a> {{.X.NoRefresh}} {{.X.ForScripts}} <a href="{{.JSON}}">JSON</a>.</p>
{{if .NoneYet}}<p role="status" style="margin:8px 0 0">{{.X.NotYet}}</p>{{end}}
</div>
<div class="card">
{{if .Rows}}<div class="scroll" role="region" aria-label="{{.X.Emails}}" tabindex="0"><table>
<thead><tr><th>{{.X.To}}</th><th>{{.X.Subject}}</th><th>{{.X.Received}}</th><th>{{.X.Link}}</th></tr></thead>
<tbody>
{{$x := .X}}{{range .Rows}}<tr><td>{{.To}}</td><td{{with .Lang}} lang="{{.}}"{{end}}><a href="{{.Href}}">{{.Subject}}</a></td><td class="when">{{.When}}</td><td>{{if .Link}}<a class="btn" href="{{.Link}}">{{$x.OpenLink}}</a>{{end}}</td></tr>
{{end}}</tbody>
</table></div>{{else}}<p>{{.X.NoEmail}}</p>{{end}}
</div>
` + pageFoot))

var notFoundTmpl = template.Must(template.New("notfound").Parse(pageHead + `
<div class="card"><p>{{.X.NotFound}}</p></div>
` + pageFoot))

var messageTmpl = template.Must(template.New("message").Parse(pageHead + `
<div class="card">
<dl>
{{range .Headers}}<dt lang="en">{{.Name}}</dt><dd{{with .Lang}} lang="{{.}}"{{end}}>{{.Value}}</dd>
{{end}}</dl>
</div>
{{if .M.Links}}<div class="card">
<h2>{{.X.LinksIn}}</h2>
<ul class="links">
{{range .M.Links}}<li><a href="{{.}}">{{.}}</a></li>
{{end}}</ul>
</div>{{end}}
{{if .SrcDoc}}<div class="card">
<h2>{{.X.HTML}}</h2>
<iframe title="{{.X.HTMLTitle}}" sandbox="allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation" srcdoc="{{.SrcDoc}}"></iframe>
</div>{{end}}
<div class="card">
<h2>{{.X.Plain}}</h2>
<pre{{with .Lang}} lang="{{.}}"{{end}}>{{range .Text}}{{if .URL}}<a href="{{.URL}}">{{.URL}}</a>{{else}}{{.Text}}{{end}}{{end}}</pre>
</div>
` + pageFoot))
