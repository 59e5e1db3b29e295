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
	"net/netip"
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
	keyPathLen    = "path_len"
)

// Defaults of Config.
const (
	DefaultIdle         = 15 * time.Minute
	DefaultRenewIPBurst = 10
	DefaultCacheSize    = 50_000
	DefaultMaxIPs       = 10_000
	// DefaultLinkEventBudget is how many touched, expired and continuation
	// events (each kind counted apart) one process publishes per link.
	DefaultLinkEventBudget = 16
	// DefaultRenewPerIP refills one renewal request per IP every 30s.
	DefaultRenewPerIP = rate.Limit(1.0 / 30)
	// DefaultClickPerIP and DefaultClickIPBurst: requests under /l/ per
	// client IP (a /64 for IPv6): 2 per second, bursts of 30.
	DefaultClickPerIP   = rate.Limit(2)
	DefaultClickIPBurst = 30
	// Defaults of the HTTP server's limits (ConfigureServer).
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 20 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxBodyBytes      = 16 << 10
	// hstsMaxAge is the Strict-Transport-Security of an https public URL.
	hstsMaxAge = "max-age=31536000"
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
	NC *nats.Conn
	// Ready, if set, is another /readyz check: the process's (503 once it
	// is stopping, so load balancers take it out before it closes).
	Ready     admin.Ready
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

	// ClickPerIP and ClickIPBurst limit requests under /l/ per client IP
	// in this process; one over the limit gets a 429 page. Defaults
	// DefaultClickPerIP, DefaultClickIPBurst.
	ClickPerIP   rate.Limit
	ClickIPBurst int
	// LinkEventBudget bounds the touched and expired events (and the
	// recorded continuations) this process publishes per link and kind
	// (default DefaultLinkEventBudget); events of one link, type, reason
	// and minute share a Nats-Msg-Id, so replicas dedupe them.
	LinkEventBudget int
	// TrustedProxies are the addresses whose X-Forwarded-For is honoured
	// for per-IP limits (the rightmost hop not in them is the client).
	// Default none: the connection's address is the client.
	TrustedProxies []netip.Prefix

	// Limits of the HTTP server ConfigureServer sets up. Defaults
	// DefaultReadHeaderTimeout, DefaultReadTimeout, DefaultWriteTimeout,
	// DefaultIdleTimeout, DefaultMaxHeaderBytes, DefaultMaxBodyBytes.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// MaxBodyBytes caps a request body (the forms post none).
	MaxBodyBytes int64
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
	ips       *ipLimiters // renewals
	clickIPs  *ipLimiters // everything under /l/
	budgets   *eventBudgets
	proxies   proxies
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
	if cfg.ClickPerIP <= 0 {
		cfg.ClickPerIP = DefaultClickPerIP
	}
	if cfg.ClickIPBurst <= 0 {
		cfg.ClickIPBurst = DefaultClickIPBurst
	}
	if cfg.LinkEventBudget <= 0 {
		cfg.LinkEventBudget = DefaultLinkEventBudget
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&cfg.ReadTimeout, DefaultReadTimeout},
		{&cfg.WriteTimeout, DefaultWriteTimeout}, {&cfg.IdleTimeout, DefaultIdleTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
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
		clickIPs:  newIPLimiters(cfg.ClickPerIP, cfg.ClickIPBurst, cfg.MaxIPs),
		budgets:   newEventBudgets(cfg.LinkEventBudget, cfg.CacheSize),
		proxies:   trustedProxies(cfg.TrustedProxies),
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

// Handler serves the redeemer's public routes:
//
//	GET  /l/{token}             confirm page, refusal page, or straight through (same browser); HEAD too
//	POST /l/{token}             redeem: 303 to the portal with ?ticket=
//	POST /l/{token}/renew       mail a fresh link to the address on record
//	GET  /.well-known/jwks.json ticket verification keys
//	GET  /healthz, /readyz
//
// Another method on a route answers 405 with Allow. /metrics is on
// [Redeemer.AdminHandler], for the admin address.
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
	mux.HandleFunc("GET /l/{token}/{rest...}", r.serveNotFound)
	mux.HandleFunc("POST /l/{token}/{rest...}", r.serveNotFound)
	mux.HandleFunc("GET /.well-known/jwks.json", r.serveJWKS)
	admin.RegisterHealth(mux, r.readiness()...)
	return r.protect(mux)
}

// readiness are the checks of /readyz.
func (r *Redeemer) readiness() []admin.Ready {
	checks := []admin.Ready{admin.NATSReady(r.cfg.NC)}
	if r.cfg.Ready != nil {
		checks = append(checks, r.cfg.Ready)
	}
	return checks
}

// AdminHandler serves /healthz, /readyz and /metrics, for the admin
// address (LINKPIPE_ADMIN_ADDR), never the public one.
func (r *Redeemer) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	admin.Register(mux, r.reg, r.readiness()...)
	return mux
}

// ConfigureServer makes srv serve Handler within the Config's limits: read
// header, read, write and idle timeouts (a slow or idle connection is
// closed) and the header size.
func (r *Redeemer) ConfigureServer(srv *http.Server) {
	srv.Handler = r.Handler()
	srv.ReadHeaderTimeout = r.cfg.ReadHeaderTimeout
	srv.ReadTimeout = r.cfg.ReadTimeout
	srv.WriteTimeout = r.cfg.WriteTimeout
	srv.IdleTimeout = r.cfg.IdleTimeout
	srv.MaxHeaderBytes = r.cfg.MaxHeaderBytes
}

// protect sets the headers every answer carries, caps the request body,
// limits requests under /l/ per client IP and turns a panic into a plain
// error page instead of a dropped connection.
func (r *Redeemer) protect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h := w.Header()
		h.Set("Referrer-Policy", "no-referrer") // the token must not leak to the portal
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		if r.secure {
			h.Set("Strict-Transport-Security", hstsMaxAge)
		}
		req.Body = http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				r.log.Error("redeemer: panic serving request", keyPathLen, len(req.URL.Path), keyErr, fmt.Sprint(p))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		if strings.HasPrefix(req.URL.Path, "/l/") && !r.clickIPs.allow(r.clientKey(req), r.clock.Now()) {
			r.m.clicks.WithLabelValues(methodLabel(req.Method), outcomeLimited).Inc()
			h.Set("Retry-After", "10")
			r.limited(w, req)
			return
		}
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
