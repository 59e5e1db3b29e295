// Package support owns the support view: `linkpipe explain` as a page and
// as JSON, for the people who answer "why can't my client get in?". By
// client (practice and client id) or by link id, it shows each link's
// history from the ledger (internal/history) and today's verdict in plain
// words, with what to do about it. It is served on the admin address of
// the workers that can read the ledger (issuer, redeemer) and in dev mode;
// it shows what explain shows and nothing more (ids, reasons, browsers'
// user agents; never an address or a token).
//
// The page is in the browser's language (Accept-Language: English or
// Spanish, internal/locale); the ledger's own words (reason codes, the
// timeline's details) stay English and are marked so. The JSON is always
// English, as explain's.
package support

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/locale"
)

// Path is where the view is served; Path+".json" answers the same query
// as JSON.
const Path = "/support"

// Timeout bounds reading the ledger for one request.
const Timeout = 20 * time.Second

// keyErr is the log key of an error, as every worker's.
const keyErr = "err"

//go:embed support.html
var pageFS embed.FS

// catalogue puts the page in English or Spanish; it is immutable.
var catalogue = locale.MustNew()

var page = template.Must(template.New("support.html").Funcs(template.FuncMap{
	"when": stamp,
}).ParseFS(pageFS, "support.html"))

// Query is what the view was asked: a client of a practice, or a link.
type Query struct {
	Practice string `json:"practice,omitempty"`
	Client   string `json:"client,omitempty"`
	Link     string `json:"link,omitempty"`
}

// Answer is the JSON of the view (and the data of its page).
type Answer struct {
	Query Query `json:"query"`
	// At is when the verdicts were made.
	At time.Time `json:"at"`
	// Links are the links found, each with its history and verdict.
	Links []history.Status `json:"links"`
	// Timeline is every line of the history, oldest first.
	Timeline []history.Entry `json:"timeline"`
	// Error says why there is no answer (a bad id, no such link).
	Error string `json:"error,omitempty"`
}

// Handler serves the view at Path and Path+".json", reading the ledger
// with js and judging links at clk's now; a ledger it cannot read is
// logged to log (nil: not logged) and answered 503.
func Handler(js jetstream.JetStream, clk clock.Clock, log *slog.Logger) http.Handler {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{js: js, clock: clk, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path, h.serve)
	mux.HandleFunc("GET "+Path+".json", h.serve)
	return mux
}

type handler struct {
	js    jetstream.JetStream
	clock clock.Clock
	log   *slog.Logger
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	q := Query{
		Practice: strings.TrimSpace(r.URL.Query().Get("practice")),
		Client:   strings.TrimSpace(r.URL.Query().Get("client")),
		Link:     strings.TrimSpace(r.URL.Query().Get("link")),
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if strings.HasSuffix(r.URL.Path, ".json") {
		ans, status := h.answer(r.Context(), q, catalogue.English())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ans)
		return
	}
	// Staff read the page: no practice's locale applies, only the browser's.
	l := catalogue.ForPage(r.Header.Get("Accept-Language"), "")
	ans, status := h.answer(r.Context(), q, l)
	var buf bytes.Buffer
	if err := page.Execute(&buf, newView(l, ans)); err != nil {
		h.log.Error("support: the page could not be rendered", keyErr, err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "page error\n")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", l.Code())
	w.Header().Set("Vary", "Accept-Language")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// answer reads the ledger for q, with the error and the verdicts in l;
// the status is the HTTP status to answer.
func (h *handler) answer(ctx context.Context, q Query, l *locale.Lang) (*Answer, int) {
	now := h.clock.Now()
	ans := &Answer{Query: q, At: now, Links: []history.Status{}, Timeline: []history.Entry{}}
	switch {
	case q.Link == "" && q.Client == "" && q.Practice == "":
		return ans, http.StatusOK // the empty form
	case q.Link != "" && (q.Client != "" || q.Practice != ""):
		ans.Error = l.T("Give a practice and a client, or a link id, not both.")
		return ans, http.StatusBadRequest
	case q.Link == "" && (q.Client == "" || q.Practice == ""):
		ans.Error = l.T("Give both a practice id and a client id (or a link id).")
		return ans, http.StatusBadRequest
	}
	for _, id := range []string{q.Practice, q.Client, q.Link} {
		if id != "" && !events.ValidID(id) {
			ans.Error = l.T("Ids are 1 to 64 letters, digits, '_' or '-'.")
			return ans, http.StatusBadRequest
		}
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var tl *history.Timeline
	var err error
	if q.Link != "" {
		tl, err = history.Link(ctx, h.js, q.Link)
	} else {
		tl, err = history.Client(ctx, h.js, q.Practice, q.Client)
	}
	switch {
	case errors.Is(err, history.ErrNoSuchLink):
		ans.Error = l.T("No link %s was ever issued.", q.Link)
		return ans, http.StatusNotFound
	case err != nil:
		h.log.Warn("support: the ledger could not be read", keyErr, err)
		ans.Error = l.T("The ledger could not be read; try again.")
		return ans, http.StatusServiceUnavailable
	}
	ans.Links = tl.StatusesIn(now, l)
	ans.Timeline = append(ans.Timeline, tl.Entries...)
	return ans, http.StatusOK
}

// view is the page's data: the answer, and every word of the page in its
// language.
type view struct {
	*Answer
	// Lang is the page's language, <html lang>.
	Lang string
	// Asked tells a query was made (not the empty form).
	Asked bool
	// Summary is "Verdicts as of ... N links found.".
	Summary string
	// L are the page's words.
	L     words
	Cards []card
}

// words are the page's fixed words in its language.
type words struct {
	Title, Heading, Lead                               string
	ByClient, PracticeID, ClientID, Or, ByLink, LinkID string
	Explain, AsJSON, None                              string
	WhatToDo, Scope, Reason, Email, NoEmail, Delivery  string
	When, What, Detail                                 string
	Footer                                             template.HTML
}

// card is one link's section.
type card struct {
	history.Status
	Badge   string
	Heading template.HTML
	Caption template.HTML
}

func newView(l *locale.Lang, ans *Answer) *view {
	v := &view{Answer: ans, Lang: l.Code(), Asked: ans.Query.Link != "" || ans.Query.Client != "", L: words{
		Title:      l.T("Support: why can't my client get in?") + " \u00b7 linkpipe",
		Heading:    l.T("Why can't my client get in?"),
		Lead:       l.T("Each link of a client, what happened to it, whether it works today, and what to do."),
		ByClient:   l.T("By client"),
		PracticeID: l.T("Practice id"),
		ClientID:   l.T("Client id"),
		Or:         l.T("or"),
		ByLink:     l.T("By link"),
		LinkID:     l.T("Link id"),
		Explain:    l.T("Explain"),
		AsJSON:     l.T("As JSON"),
		None:       l.T("No links on record."),
		WhatToDo:   l.T("What to do:"),
		Scope:      l.T("Scope"),
		Reason:     l.T("Reason code"),
		Email:      l.T("Email"),
		NoEmail:    l.T("none recorded yet"),
		Delivery:   l.T("Delivery"),
		When:       l.T("When"),
		What:       l.T("What"),
		Detail:     l.T("Detail"),
		Footer: withCode(l.T("Read from the ledger (streams SCOPES and LINKS), as %s does. No address or token is shown.", locale.Slot(0)),
			"linkpipe explain"),
	}}
	found := l.T("%d links found.", len(ans.Links))
	if len(ans.Links) == 1 {
		found = l.T("1 link found.")
	}
	v.Summary = l.T("Verdicts as of %s.", stamp(ans.At)) + " " + found
	for _, s := range ans.Links {
		c := card{Status: s, Badge: l.T("Refused"), Caption: withCode(l.T("History of %s", locale.Slot(0)), s.LinkID)}
		if s.Works {
			c.Badge = l.T("Works")
		}
		switch s.Purpose {
		case events.PurposeSignin:
			c.Heading = withCode(l.T("Sign-in link %s", locale.Slot(0)), s.LinkID)
		case events.PurposeDocument:
			c.Heading = withCode(l.T("Document link %s", locale.Slot(0)), s.LinkID)
		case events.PurposeTelehealth:
			c.Heading = withCode(l.T("Video appointment link %s", locale.Slot(0)), s.LinkID)
		default:
			c.Heading = withCode(l.T("Link %s", locale.Slot(0)), s.LinkID)
		}
		v.Cards = append(v.Cards, c)
	}
	return v
}

// stamp writes a time of the ledger, the same in every language.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// withCode is l.T's sentence s, printed with locale.Slot(i) for its
// arguments, escaped, with codes[i], escaped, in a <code> element in
// slot i.
func withCode(s string, codes ...string) template.HTML {
	frags := make([]template.HTML, len(codes))
	for i, c := range codes {
		frags[i] = template.HTML("<code>" + template.HTMLEscapeString(c) + "</code>")
	}
	return locale.WithHTML(s, frags...)
}
