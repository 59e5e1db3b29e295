// Package support owns the support view: `linkpipe explain` as a page and
// as JSON, for the people who answer "why can't my client get in?". By
// client (practice and client id) or by link id, it shows each link's
// history from the ledger (internal/history) and today's verdict in plain
// words, with what to do about it. It is served on the admin address of
// the workers that can read the ledger (issuer, redeemer) and in dev mode;
// it shows what explain shows and nothing more (ids, reasons, browsers'
// user agents; never an address or a token).
package support

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/history"
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

var page = template.Must(template.New("support.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
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
	ans, status := h.answer(r.Context(), q)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if strings.HasSuffix(r.URL.Path, ".json") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ans)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = page.Execute(w, ans)
}

// answer reads the ledger for q; the status is the HTTP status to answer.
func (h *handler) answer(ctx context.Context, q Query) (*Answer, int) {
	now := h.clock.Now()
	ans := &Answer{Query: q, At: now, Links: []history.Status{}, Timeline: []history.Entry{}}
	switch {
	case q.Link == "" && q.Client == "" && q.Practice == "":
		return ans, http.StatusOK // the empty form
	case q.Link != "" && (q.Client != "" || q.Practice != ""):
		ans.Error = "Give a practice and a client, or a link id, not both."
		return ans, http.StatusBadRequest
	case q.Link == "" && (q.Client == "" || q.Practice == ""):
		ans.Error = "Give both a practice id and a client id (or a link id)."
		return ans, http.StatusBadRequest
	}
	for _, id := range []string{q.Practice, q.Client, q.Link} {
		if id != "" && !events.ValidID(id) {
			ans.Error = "Ids are 1 to 64 letters, digits, '_' or '-'."
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
		ans.Error = "No link " + q.Link + " was ever issued."
		return ans, http.StatusNotFound
	case err != nil:
		h.log.Warn("support: the ledger could not be read", keyErr, err)
		ans.Error = "The ledger could not be read; try again."
		return ans, http.StatusServiceUnavailable
	}
	ans.Links = tl.Statuses(now)
	ans.Timeline = append(ans.Timeline, tl.Entries...)
	return ans, http.StatusOK
}
