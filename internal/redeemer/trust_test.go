package redeemer_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/scope"
	"golang.org/x/time/rate"
)

// TestMethodLabelsAndMetricsAreBounded (finding 3): requests with long
// random methods get 405 with Allow (never 5xx), add no method label, and
// /metrics is served on the admin address only.
func TestMethodLabelsAndMetricsAreBounded(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, _ := e.issue(spec{EventID: "ev-methods"})
	c := noRedirect(nil)
	for i := range 50 {
		m := fmt.Sprintf("M%d%s", i, strings.Repeat("X", 2000))
		for _, p := range []string{"/l/" + tok, "/l/" + tok + "/renew", "/l/" + tok + "/x/y", "/l/"} {
			a := do(t, c, m, s.URL+p)
			if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") == "" {
				t.Fatalf("%.10s %s: %d Allow %q, want 405 with Allow", m, p, a.status, a.header.Get("Allow"))
			}
		}
	}
	do(t, c, "GET", s.URL+"/l/"+tok+"/x/y").refused(t, http.StatusNotFound, events.ReasonNotFound)
	if a := do(t, c, "GET", s.URL+"/metrics"); a.status != http.StatusNotFound {
		t.Fatalf("/metrics on the public address: %d, want 404", a.status)
	}
	a := do(t, c, "GET", s.admin.URL+"/metrics")
	if a.status != 200 {
		t.Fatalf("admin /metrics: %d", a.status)
	}
	methods := map[string]bool{}
	for _, m := range regexp.MustCompile(`method="([^"]*)"`).FindAllStringSubmatch(a.body, -1) {
		methods[m[1]] = true
	}
	for m := range methods {
		if m != "GET" && m != "HEAD" && m != "POST" && m != "other" {
			t.Fatalf("method label %.20q on /metrics", m)
		}
	}
	if len(a.body) > 64<<10 {
		t.Fatalf("/metrics is %d bytes", len(a.body))
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if a := do(t, c, "GET", s.URL+p); a.status != 200 {
			t.Fatalf("public %s: %d", p, a.status)
		}
	}
}

// linkMessages is the number of messages on links.<id>.> but the issued one.
func (e *env) linkMessages(id string) uint64 {
	return e.count(bus.StreamLinks, "links."+id+".>") - 1
}

// TestOpeningALinkAddsBoundedLinksMessages (finding 4): 300 GETs and 300
// HEADs of a link, over five hours, on two replicas, add a bounded number
// of LINKS messages; so do 300 refused clicks of it once used.
func TestOpeningALinkAddsBoundedLinksMessages(t *testing.T) {
	e := newEnv(t)
	a, b := e.start(), e.start()
	tok, id := e.issue(spec{EventID: "ev-storm"})
	c := noRedirect(nil)
	for i := range 300 {
		s := a
		if i%2 == 1 {
			s = b
		}
		if ans := do(t, c, "GET", s.URL+"/l/"+tok); ans.status != 200 {
			t.Fatalf("GET %d: %d", i, ans.status)
		}
		if ans := do(t, c, "HEAD", s.URL+"/l/"+tok); ans.status != 200 {
			t.Fatalf("HEAD %d: %d", i, ans.status)
		}
		e.clock.Advance(time.Minute)
	}
	budget := uint64(redeemer.DefaultLinkEventBudget)
	if n := e.linkMessages(id); n > 2*budget || n == 0 {
		t.Fatalf("600 opens added %d LINKS messages, want 1..%d", n, 2*budget)
	}
	// Same minute, same kind: one message, whichever replica answered.
	tok2, id2 := e.issue(spec{EventID: "ev-storm2", Client: "c-2"})
	for i := range 20 {
		s := a
		if i%2 == 1 {
			s = b
		}
		do(t, c, "GET", s.URL+"/l/"+tok2)
	}
	if n := e.linkMessages(id2); n != 1 {
		t.Fatalf("20 GETs in one minute on two replicas: %d messages, want 1", n)
	}

	do(t, c, "POST", a.URL+"/l/"+tok2)
	e.projectorIdle()
	before := e.linkMessages(id2)
	for range 300 {
		do(t, c, "GET", a.URL+"/l/"+tok2).refused(t, http.StatusGone, events.ReasonUsed)
		e.clock.Advance(time.Minute)
	}
	if n := e.linkMessages(id2) - before; n > budget {
		t.Fatalf("300 refused clicks added %d messages, want at most %d", n, budget)
	}
}

// TestClickPerIPLimit (finding 4): one IP opening links too fast gets a
// 429 page (never 5xx); time refills its bucket; another IP is not limited.
func TestClickPerIPLimit(t *testing.T) {
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) { c.ClickPerIP, c.ClickIPBurst = rate.Every(time.Second), 3 })
	tok, _ := e.issue(spec{EventID: "ev-click-ip"})
	c := noRedirect(nil)
	for i := range 3 {
		if a := do(t, c, "GET", s.URL+"/l/"+tok); a.status != 200 {
			t.Fatalf("GET %d: %d", i, a.status)
		}
	}
	for _, m := range []string{"GET", "POST", "HEAD"} {
		a := do(t, c, m, s.URL+"/l/"+tok)
		if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
			t.Fatalf("%s over the limit: %d Retry-After %q", m, a.status, a.header.Get("Retry-After"))
		}
		if m != "HEAD" && !strings.Contains(a.body, "Too many") {
			t.Fatalf("429 page: %s", a.body)
		}
	}
	if a := do(t, c, "GET", s.URL+"/.well-known/jwks.json"); a.status != 200 {
		t.Fatalf("jwks limited: %d", a.status)
	}
	e.clock.Advance(2 * time.Second)
	if a := do(t, c, "GET", s.URL+"/l/"+tok); a.status != 200 {
		t.Fatalf("after refill: %d", a.status)
	}
}

// rawConn dials s and returns the connection and a reader of it.
func rawConn(t *testing.T, s *server) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// closedWithin reads from br until the server closes the connection,
// failing if that takes longer than d.
func closedWithin(t *testing.T, conn net.Conn, br *bufio.Reader, d time.Duration, what string) {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: connection still open after %s", what, d)
	}
}

// TestSlowClientsAreCut (finding 5): an idle keep-alive connection is
// closed after the idle timeout; a POST that declares a body it never
// sends is answered or closed within the read timeout; a body over the cap
// is refused (never 5xx).
func TestSlowClientsAreCut(t *testing.T) {
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) {
		c.ReadTimeout, c.WriteTimeout, c.IdleTimeout, c.ReadHeaderTimeout = 500*time.Millisecond, 2*time.Second, 500*time.Millisecond, 300*time.Millisecond
		c.MaxBodyBytes = 1 << 10
	})
	tok, _ := e.issue(spec{EventID: "ev-slow"})

	conn, br := rawConn(t, s)
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: links.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedWithin(t, conn, br, 3*time.Second, "idle keep-alive")

	conn, br = rawConn(t, s)
	fmt.Fprintf(conn, "POST /l/%s HTTP/1.1\r\nHost: links.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n", tok)
	closedWithin(t, conn, br, 3*time.Second, "POST without its body")

	conn, br = rawConn(t, s)
	fmt.Fprintf(conn, "POST /l/%s/renew HTTP/1.1\r\nHost: links.test\r\n", tok)
	time.Sleep(time.Second) // headers never finished
	closedWithin(t, conn, br, 3*time.Second, "unfinished headers")

	// A body over the cap: not 5xx, and the link is not used by it.
	body := strings.Repeat("a=b&", 100<<10)
	req, _ := http.NewRequest("POST", s.URL+"/l/"+tok, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := noRedirect(nil).Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("oversized body: %d", resp.StatusCode)
		}
	}
	if a := do(t, noRedirect(nil), "GET", s.URL+"/l/"+strings.Repeat("A", 40<<10)); a.status >= 500 {
		t.Fatalf("oversized header: %d", a.status)
	}
}

// sessionOf returns the session cookie's Set-Cookie line and its one entry's
// signed expiry.
func sessionOf(t *testing.T, a answer, name string) (string, time.Time) {
	t.Helper()
	for _, sc := range a.header.Values("Set-Cookie") {
		if !strings.HasPrefix(sc, name+"=") {
			continue
		}
		v := strings.TrimPrefix(strings.SplitN(sc, ";", 2)[0], name+"=")
		parts := strings.Split(strings.Split(v, "~")[0], ".")
		if len(parts) != 3 {
			t.Fatalf("cookie value %q", v)
		}
		exp, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return sc, time.Unix(exp, 0)
	}
	t.Fatalf("no %s cookie in %v", name, a.header.Values("Set-Cookie"))
	return "", time.Time{}
}

// TestSessionCookieNeverOutlivesLink (finding 6): a browser-session cookie
// (no Max-Age, no Expires) whose signed expiry is at most the link's; a
// continuation after the link expired says expired; continuations are
// recorded on LINKS as touched with reason continued.
func TestSessionCookieNeverOutlivesLink(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-cookie-life"})
	expires := e.clock.Now().Add(20 * time.Minute)
	e.change(id, func(st *scope.State) { st.ExpiresAt = expires })

	jar, _ := cookiejar.New(nil)
	browser := noRedirect(jar)
	a := do(t, browser, "POST", s.URL+"/l/"+tok)
	e.ticketOf(t, s, a, e.portal.URL+"/portal")
	sc, exp := sessionOf(t, a, redeemer.SessionCookie)
	if strings.Contains(sc, "Max-Age") || strings.Contains(sc, "Expires") {
		t.Fatalf("session cookie persists: %q", sc)
	}
	if !exp.Equal(e.clock.Now().Add(15 * time.Minute).Truncate(time.Second)) {
		t.Fatalf("cookie expiry %s, want redemption + 15m", exp)
	}
	// A continuation 10 minutes later: recorded; the cookie now ends with the link.
	e.clock.Advance(10 * time.Minute)
	a = do(t, browser, "GET", s.URL+"/l/"+tok)
	e.ticketOf(t, s, a, e.portal.URL+"/portal")
	if _, exp = sessionOf(t, a, redeemer.SessionCookie); exp.After(expires) {
		t.Fatalf("cookie expiry %s after the link's %s", exp, expires)
	}
	eventually.True(t, 15*time.Second, func() bool {
		return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == 1
	}, "continuation recorded")
	if ev := e.lastEvent(id, events.TypeTouched); ev.Reason != events.TouchContinued {
		t.Fatalf("continuation event %+v", ev)
	}
	// The link expires before the session would idle out: expired, not through.
	e.clock.Advance(9*time.Minute + 59*time.Second)
	e.ticketOf(t, s, do(t, browser, "GET", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	e.clock.Advance(2 * time.Second)
	do(t, browser, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonExpired)
	do(t, browser, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonExpired)
	// Another browser still hears "used".
	do(t, noRedirect(nil), "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
}

// TestHostCookieAndHSTSOnHTTPS (finding 6, HSTS): on an https public URL
// the cookie is __Host-, Secure, Path=/; answers carry HSTS; the CSP lets
// forms post only to the redeemer (and the confirm form's redirect to the
// portal).
func TestHostCookieAndHSTSOnHTTPS(t *testing.T) {
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) { c.PublicURL = "https://links.test" })
	tok, _ := e.issue(spec{EventID: "ev-host-cookie"})
	g := do(t, noRedirect(nil), "GET", s.URL+"/l/"+tok)
	if !strings.Contains(g.header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("no HSTS: %v", g.header)
	}
	csp := g.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "form-action 'self' "+e.portal.URL) {
		t.Fatalf("CSP %q", csp)
	}
	a := do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok)
	sc, _ := sessionOf(t, a, "__Host-"+redeemer.SessionCookie)
	for _, want := range []string{"Secure", "Path=/;", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(sc+";", want) {
			t.Fatalf("Set-Cookie %q lacks %q", sc, want)
		}
	}
	if strings.Contains(sc, "Max-Age") || strings.Contains(sc, "Domain") {
		t.Fatalf("Set-Cookie %q", sc)
	}
	// On http: no HSTS.
	plain := e.start()
	if h := do(t, noRedirect(nil), "GET", plain.URL+"/l/"+tok).header.Get("Strict-Transport-Security"); h != "" {
		t.Fatalf("HSTS on http: %q", h)
	}
	if csp := do(t, noRedirect(nil), "GET", plain.URL+"/l/x").header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self'") {
		t.Fatalf("CSP %q", csp)
	}
}

// TestTicketAudienceIsPortalOrigin (finding 7): aud is the origin of the
// practice's portal_url, or of the default portal.
func TestTicketAudienceIsPortalOrigin(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	acme, _ := e.issue(spec{EventID: "ev-aud-acme"})
	plain, _ := e.issue(spec{EventID: "ev-aud-plain", Practice: practicePlain})
	if cl := e.ticketOf(t, s, do(t, noRedirect(nil), "POST", s.URL+"/l/"+acme), e.portal.URL+"/portal"); cl.Audience != e.portal.URL {
		t.Fatalf("acme aud %q, want %q", cl.Audience, e.portal.URL)
	}
	if cl := e.ticketOf(t, s, do(t, noRedirect(nil), "POST", s.URL+"/l/"+plain), e.defaultPortal.URL+"/"); cl.Audience != e.defaultPortal.URL {
		t.Fatalf("plain aud %q, want %q", cl.Audience, e.defaultPortal.URL)
	}
}

// TestTrustedProxiesAndIPv6Grouping (finding 9): behind a trusted proxy
// each client (the rightmost untrusted X-Forwarded-For hop) has its own
// bucket; without trust the header is ignored.
func TestTrustedProxiesAndIPv6Grouping(t *testing.T) {
	e := newEnv(t)
	limit := func(c *redeemer.Config) { c.ClickPerIP, c.ClickIPBurst = rate.Every(time.Hour), 2 }
	trusted := e.start(limit, func(c *redeemer.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	untrusted := e.start(limit)
	tok, _ := e.issue(spec{EventID: "ev-proxy"})
	get := func(s *server, xff string) int {
		req, _ := http.NewRequest("GET", s.URL+"/l/"+tok, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		return answerOf(t, noRedirect(nil), req).status
	}
	// Client 203.0.113.7 through two trusted hops; a spoofed left entry is ignored.
	for i := range 2 {
		if st := get(trusted, fmt.Sprintf("198.51.100.%d, 203.0.113.7, 10.1.2.3", i)); st != 200 {
			t.Fatalf("client A %d: %d", i, st)
		}
	}
	if st := get(trusted, "203.0.113.7"); st != http.StatusTooManyRequests {
		t.Fatalf("client A over its limit: %d", st)
	}
	if st := get(trusted, "203.0.113.8"); st != 200 {
		t.Fatalf("client B shares A's bucket: %d", st)
	}
	// IPv6: one /64 is one client.
	get(trusted, "2001:db8:1:2::1")
	get(trusted, "2001:db8:1:2:ffff::9")
	if st := get(trusted, "2001:db8:1:2:abcd::1"); st != http.StatusTooManyRequests {
		t.Fatalf("third address of one /64: %d, want 429", st)
	}
	if st := get(trusted, "2001:db8:1:3::1"); st != 200 {
		t.Fatalf("another /64: %d", st)
	}
	// Untrusted: X-Forwarded-For does not buy a new bucket.
	for i := range 3 {
		st := get(untrusted, fmt.Sprintf("203.0.113.%d", 50+i))
		if i < 2 && st != 200 || i == 2 && st != http.StatusTooManyRequests {
			t.Fatalf("untrusted %d: %d", i, st)
		}
	}
}

var _ = url.Parse

// TestFirstIssuedRecordIsTheOnlyOneTrusted: part of trust finding 1. A
// second links.<id>.issued record (a re-mint after the dedupe window by a
// buggy or hostile publisher) names another client; the redeemer must keep
// trusting the first record: the ticket's sub stays the link's own client.
func TestFirstIssuedRecordIsTheOnlyOneTrusted(t *testing.T) {
	e := newEnv(t)
	tok, id := e.issue(spec{EventID: "ev-first", Client: "alice"})
	forged := &events.LinkEvent{
		EventID: "issued-again-" + id, Type: events.TypeIssued, LinkID: id,
		PracticeID: practiceAcme, ClientID: "mallory", Purpose: events.PurposeSignin, At: e.clock.Now(),
	}
	if err := bus.PublishEvent(context.Background(), e.js, forged); err != nil {
		t.Fatal(err)
	}
	s := e.start() // a fresh replica: nothing cached
	a := do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok)
	cl := e.ticketOf(t, s, a, e.portal.URL+"/portal")
	if cl.Subject != "alice" {
		t.Fatalf("ticket sub %q, want alice: the redeemer trusted a later issued record", cl.Subject)
	}
}

// TestEveryContinuationIsRecorded reproduces review finding F3: past the
// per-link event budget (16) continuations still got tickets but were no
// longer recorded on LINKS. Each continuation is a ticket: each is
// recorded.
func TestEveryContinuationIsRecorded(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-cont"})
	jar, _ := cookiejar.New(nil)
	browser := noRedirect(jar)
	e.ticketOf(t, s, do(t, browser, "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	const n = 20
	for range n {
		e.clock.Advance(time.Minute) // one a minute: not coalesced
		e.ticketOf(t, s, do(t, browser, "GET", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	}
	eventually.True(t, 15*time.Second, func() bool {
		return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == n
	}, "every continuation recorded")
}
