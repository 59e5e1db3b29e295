// Package redeemer owns the click: the HTTP side of a link (the confirm page
// a GET shows, the redemption a POST makes, the refusal page that names its
// reason and offers a fresh link, the renewal request, the JWKS portals
// verify tickets with).
//
// # How a click is decided
//
// The token names a link (link.ID); the link's issued event (LINKS, immutable,
// cached) names its scope; the scope's last message (SCOPES) is its state;
// scope.State.Verdict gives the verdict. A GET never changes state. A POST of a
// one-time link publishes the "used" state on the scope subject with
// expected-last-subject-sequence = the sequence it read, so exactly one of any
// number of concurrent redeemers, on any number of replicas, wins; the others
// re-read and see "used" (or "superseded" when a newer link won the scope).
//
// The winner gets a 303 to the portal target with ?ticket=<JWS> and a
// session cookie; a later click of that used link from the same browser,
// while the cookie is live, goes straight through again.
//
// The used and revoked lifecycle events are derived from SCOPES by the
// projector (package internal/projector), so a crash between the state
// change and the event cannot lose the event.
//
// # Renewal
//
// POST /l/{token}/renew sends the link's client, at the address on record,
// a way back in: a fresh sign-in link for sign-in and document links
// (actions.signin.requested, for the issuer), the appointment's current
// link again for telehealth links (a mail command on MAIL; a sign-in link
// when the appointment is canceled, revoked or over). Renewals count
// against a per-client limit kept by the RENEWALS stream, shared by every
// replica, and the answer is the same page whatever happened.
package redeemer

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// Log keys.
const (
	keyLinkID     = "link_id"
	keyPracticeID = "practice_id"
	keyEventID    = "event_id"
	keySubject    = "subject"
	keyReason     = "reason"
	keyErr        = "err"
	keyClientID   = "client_id"
	keyMailID     = "mail_id"
)

// Defaults of Config.
const (
	DefaultIdle         = 15 * time.Minute
	DefaultRenewIPBurst = 10
	DefaultCacheSize    = 50_000
	DefaultMaxIPs       = 10_000
	// DefaultRenewPerIP refills one renewal request per IP every 30s.
	DefaultRenewPerIP = rate.Limit(1.0 / 30)
	// casAttempts bounds re-reads after a lost conditional publish.
	casAttempts = 8
	// opTimeout bounds the NATS work of one request.
	opTimeout = 5 * time.Second
)

// ErrConfig: New was given an incomplete configuration.
var ErrConfig = errors.New("redeemer: bad config")

// Config configures a Redeemer.
type Config struct {
	JS jetstream.JetStream
	// NC is the connection /readyz checks.
	NC        *nats.Conn
	Practices *practice.Directory
	Signer    *ticket.Signer
	// PublicURL is the redeemer's base URL (links are PublicURL/l/<token>);
	// an https URL makes the session cookie Secure.
	PublicURL string
	// PortalURL is the portal base of practices that set none.
	PortalURL string
	// CookieKey (at least 32 bytes) authenticates session cookies.
	CookieKey []byte
	// Idle is the portal session's idle timeout: the ticket's idle claim
	// and the session cookie's lifetime. Default 15m.
	Idle  time.Duration
	Clock clock.Clock
	Log   *slog.Logger
	// Metrics receives linkpipe_redeemer_* and is served at /metrics; nil
	// means a private registry.
	Metrics *prometheus.Registry
	// RenewPerIP and RenewIPBurst limit renewal requests per client IP in
	// this process (the per-client limit is the RENEWALS stream's, shared
	// by every replica). Defaults DefaultRenewPerIP, DefaultRenewIPBurst.
	RenewPerIP   rate.Limit
	RenewIPBurst int
	// MaxIPs bounds the per-IP limiter table (default DefaultMaxIPs).
	MaxIPs int
	// CacheSize bounds the issued-record cache (default DefaultCacheSize).
	CacheSize int
}

// Redeemer serves clicks.
type Redeemer struct {
	cfg       Config
	js        jetstream.JetStream
	links     *bus.Reader
	scopes    *scope.Store
	clock     clock.Clock
	log       *slog.Logger
	m         *metrics
	issued    *genCache[string, *events.LinkEvent]
	ips       *ipLimiters
	portal    string // default portal base, no trailing slash
	prefix    string // path of PublicURL, no trailing slash
	secure    bool
	pages     *pages
	reg       *prometheus.Registry
	idleSecs  int
	cookieKey []byte
}

// New checks cfg and returns a Redeemer.
func New(cfg Config) (*Redeemer, error) {
	switch {
	case cfg.JS == nil:
		return nil, fmt.Errorf("%w: JS is required", ErrConfig)
	case cfg.NC == nil:
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	case cfg.Practices == nil:
		return nil, fmt.Errorf("%w: Practices is required", ErrConfig)
	case cfg.Signer == nil:
		return nil, fmt.Errorf("%w: Signer is required", ErrConfig)
	case len(cfg.CookieKey) < 32:
		return nil, fmt.Errorf("%w: CookieKey must be at least 32 bytes", ErrConfig)
	}
	pub, err := url.Parse(cfg.PublicURL)
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("%w: PublicURL %q is not an absolute http(s) URL", ErrConfig, cfg.PublicURL)
	}
	if err := events.CheckPortalURL("PortalURL", cfg.PortalURL); err != nil || cfg.PortalURL == "" {
		return nil, fmt.Errorf("%w: PortalURL %q is not an absolute http(s) URL without query", ErrConfig, cfg.PortalURL)
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.RenewPerIP <= 0 {
		cfg.RenewPerIP = DefaultRenewPerIP
	}
	if cfg.RenewIPBurst <= 0 {
		cfg.RenewIPBurst = DefaultRenewIPBurst
	}
	if cfg.MaxIPs <= 0 {
		cfg.MaxIPs = DefaultMaxIPs
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	pg, err := newPages()
	if err != nil {
		return nil, err
	}
	r := &Redeemer{
		cfg:       cfg,
		js:        cfg.JS,
		links:     bus.NewReader(cfg.JS, bus.StreamLinks),
		scopes:    scope.NewStore(cfg.JS),
		clock:     cfg.Clock,
		log:       cfg.Log,
		m:         m,
		issued:    newGenCache[string, *events.LinkEvent](cfg.CacheSize / 2),
		ips:       newIPLimiters(cfg.RenewPerIP, cfg.RenewIPBurst, cfg.MaxIPs),
		portal:    strings.TrimRight(cfg.PortalURL, "/"),
		prefix:    strings.TrimRight(pub.Path, "/"),
		secure:    pub.Scheme == "https",
		pages:     pg,
		reg:       cfg.Metrics,
		idleSecs:  int(cfg.Idle / time.Second),
		cookieKey: append([]byte(nil), cfg.CookieKey...),
	}
	return r, nil
}

// Handler serves every route of the redeemer:
//
//	GET  /l/{token}             confirm page, refusal page, or straight through (same browser)
//	POST /l/{token}             redeem: 303 to the portal with ?ticket=
//	POST /l/{token}/renew       mail a fresh link to the address on record
//	GET  /.well-known/jwks.json ticket verification keys
//	GET  /healthz, /readyz, /metrics
func (r *Redeemer) Handler() http.Handler {
	mux := http.NewServeMux()
	cop := http.NewCrossOriginProtection()
	if u, err := url.Parse(r.cfg.PublicURL); err == nil {
		_ = cop.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	cop.SetDenyHandler(http.HandlerFunc(r.serveForbidden))

	mux.HandleFunc("GET /l/{token}", r.serveGet)
	mux.Handle("POST /l/{token}", cop.Handler(http.HandlerFunc(r.servePost)))
	mux.Handle("POST /l/{token}/renew", cop.Handler(http.HandlerFunc(r.serveRenew)))
	// Anything else under /l/ names no link.
	mux.HandleFunc("GET /l/{$}", r.serveNotFound)
	mux.HandleFunc("/l/{token}/{rest...}", r.serveNotFound)
	mux.HandleFunc("GET /.well-known/jwks.json", r.serveJWKS)
	admin.Register(mux, r.reg, admin.NATSReady(r.cfg.NC))
	return r.protect(mux)
}

// protect sets the headers every answer carries and turns a panic into a
// plain error page instead of a dropped connection.
func (r *Redeemer) protect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := w.Header()
		h.Set("Referrer-Policy", "no-referrer") // the token must not leak to the portal
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				r.log.Error("redeemer: panic serving request", "path_len", len(req.URL.Path), keyErr, fmt.Sprint(p))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, req)
	})
}

func (r *Redeemer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(r.cfg.Signer.JWKS())
}

// randomID returns 16 random bytes, base64url: a valid contract id suffix.
func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("redeemer: crypto/rand failed: " + err.Error()) // never happens (rand.Read does not fail)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}
