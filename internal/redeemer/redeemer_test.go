package redeemer_test

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// ticketOf checks a redirect to the portal and verifies its ticket against
// the redeemer's published JWKS.
func (e *env) ticketOf(t testing.TB, s *server, a answer, wantPrefix string) *ticket.Claims {
	t.Helper()
	if a.status != http.StatusSeeOther {
		t.Fatalf("status %d, want 303\n%s", a.status, a.body)
	}
	loc := a.header.Get("Location")
	if !strings.HasPrefix(loc, wantPrefix+"?ticket=") && !strings.HasPrefix(loc, wantPrefix+"&ticket=") {
		t.Fatalf("Location %q, want %s?ticket=…", loc, wantPrefix)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	jwks := do(t, http.DefaultClient, "GET", s.URL+"/.well-known/jwks.json")
	if jwks.status != 200 || !strings.HasPrefix(jwks.header.Get("Content-Type"), "application/json") {
		t.Fatalf("jwks: %d %s", jwks.status, jwks.body)
	}
	// aud is the portal's origin.
	c, err := ticket.Verify([]byte(jwks.body), u.Query().Get("ticket"),
		ticket.Want{Issuer: e.signer.Issuer(), Audience: u.Scheme + "://" + u.Host}, e.clock.Now())
	if err != nil {
		t.Fatalf("ticket does not verify: %v", err)
	}
	return c
}

func TestGetConfirmsPostRedeemsOnce(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-1", ReturnTo: "/messages?tab=new"})
	c := noRedirect(nil)

	for i := range 2 {
		a := do(t, c, "GET", s.URL+"/l/"+tok)
		if a.status != 200 || a.reason() != "" {
			t.Fatalf("GET %d: %d\n%s", i, a.status, a.body)
		}
		for _, want := range []string{"Acme Therapy", "Sign in to your client portal", `<form method="post" action="/l/` + tok + `">`, "<title>"} {
			if !strings.Contains(a.body, want) {
				t.Fatalf("confirm page lacks %q:\n%s", want, a.body)
			}
		}
		if n := strings.Count(a.body, "<button"); n != 1 {
			t.Fatalf("%d buttons, want one", n)
		}
	}
	// Two identical opens within a minute are one touched event (click
	// events coalesce per link, kind and minute).
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == 1 }, "one touched event")

	a := do(t, c, "POST", s.URL+"/l/"+tok)
	cl := e.ticketOf(t, s, a, e.portal.URL+"/portal/messages?tab=new")
	if cl.Issuer != "http://links.test" || cl.Subject != "c-1" || cl.Practice != practiceAcme || cl.Purpose != "signin" ||
		cl.Link != id || cl.IssuedAt != t0.Unix() || cl.ExpiresAt != t0.Unix()+120 || cl.Idle != 900 || cl.ID == "" {
		t.Fatalf("claims %+v", cl)
	}
	if a.header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatal("the redirect may leak the token in Referer")
	}

	a = do(t, c, "POST", s.URL+"/l/"+tok)
	a.refused(t, http.StatusGone, events.ReasonUsed)
	if !strings.Contains(a.body, `action="/l/`+tok+`/renew"`) || !strings.Contains(a.body, "Email me a new link") {
		t.Fatalf("refusal page lacks the renewal button:\n%s", a.body)
	}
	do(t, c, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)

	// The projector publishes links.<id>.used exactly once.
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)) >= 1 }, "used event")
	e.projectorIdle()
	if n := e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)); n != 1 {
		t.Fatalf("%d used events, want 1", n)
	}
	used := e.lastEvent(id, events.TypeUsed)
	if used.Type != "used" || used.LinkID != id || used.PracticeID != practiceAcme || used.ClientID != "c-1" ||
		used.Purpose != "signin" || !used.At.Equal(t0) || !strings.HasPrefix(used.EventID, "scope-") {
		t.Fatalf("used event %+v", used)
	}
	// Refused clicks are recorded with their reason.
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeExpired)) == 2 }, "expired events")
	if ex := e.lastEvent(id, events.TypeExpired); ex.Reason != events.ReasonUsed {
		t.Fatalf("expired event %+v", ex)
	}
}

func TestConcurrentPostsAcrossReplicasOneWinner(t *testing.T) {
	e := newEnv(t)
	a, b := e.start(), e.start()
	tok, id := e.issue(spec{EventID: "ev-race"})
	var (
		mu      sync.Mutex
		winners int
		others  = map[string]int{}
		wg      sync.WaitGroup
	)
	c := noRedirect(nil)
	for i := range 50 {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans := do(t, c, "POST", srv.URL+"/l/"+tok)
			mu.Lock()
			defer mu.Unlock()
			if ans.status == http.StatusSeeOther {
				winners++
			} else {
				others[fmt.Sprintf("%d %s", ans.status, ans.reason())]++
			}
		}()
	}
	wg.Wait()
	if winners != 1 || others["410 used"] != 49 {
		t.Fatalf("%d winners, others %v; want 1 and 49 × 410 used", winners, others)
	}
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)) >= 1 }, "used event")
	e.projectorIdle()
	if n := e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)); n != 1 {
		t.Fatalf("%d used events, want 1", n)
	}
}

func TestNewerSigninLinkSupersedes(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	old, oldID := e.issue(spec{EventID: "ev-old"})
	e.clock.Advance(time.Minute)
	newer, _ := e.issue(spec{EventID: "ev-new"})
	c := noRedirect(nil)
	do(t, c, "GET", s.URL+"/l/"+old).refused(t, http.StatusGone, events.ReasonSuperseded)
	do(t, c, "POST", s.URL+"/l/"+old).refused(t, http.StatusGone, events.ReasonSuperseded)
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(oldID, events.TypeExpired)) == 2 }, "expired events")
	if ex := e.lastEvent(oldID, events.TypeExpired); ex.Reason != events.ReasonSuperseded {
		t.Fatalf("expired event %+v", ex)
	}
	e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+newer), e.portal.URL+"/portal")
	// Another client's link and a document link of the same client are untouched.
	other, _ := e.issue(spec{EventID: "ev-other", Client: "c-2"})
	doc, _ := e.issue(spec{EventID: "ev-doc", Purpose: events.PurposeDocument, DocumentID: "d-9", ShareID: "s-1"})
	e.issue(spec{EventID: "ev-newest"})
	e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+other), e.portal.URL+"/portal")
	e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+doc), e.portal.URL+"/portal/documents/d-9")
}

func TestExpiredNotYetValidRevokedCanceled(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	c := noRedirect(nil)
	tok, _ := e.issue(spec{EventID: "ev-exp"})
	e.clock.Advance(24*time.Hour + time.Second)
	do(t, c, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonExpired)
	do(t, c, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonExpired)

	tok, id := e.issue(spec{EventID: "ev-rev", Client: "c-3"})
	now := e.clock.Now()
	e.change(id, func(st *scope.State) {
		st.Change, st.RevokedAt, st.RevokedReason, st.EventID, st.At = scope.ChangeRevoked, &now, "client asked", "ev-revoke", now
	})
	do(t, c, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonRevoked)
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeRevoked)) == 1 }, "revoked event")
	if ev := e.lastEvent(id, events.TypeRevoked); ev.Reason != "client asked" || ev.CauseEventID != "ev-revoke" || ev.ClientID != "c-3" {
		t.Fatalf("revoked event %+v", ev)
	}

	start := now.Add(2 * time.Hour)
	tok, id = e.issue(spec{EventID: "ev-tele", Purpose: events.PurposeTelehealth, AppointmentID: "a-1", StartsAt: start, EndsAt: start.Add(time.Hour)})
	e.change(id, func(st *scope.State) { st.ValidFrom = start.Add(-15 * time.Minute) })
	do(t, c, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonNotYetValid)
	e.change(id, func(st *scope.State) {
		st.Change, st.CanceledAt, st.EventID, st.At = scope.ChangeCanceled, &now, "ev-cancel", now
	})
	do(t, c, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonCanceled)
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeRevoked)) == 1 }, "canceled event")
	if ev := e.lastEvent(id, events.TypeRevoked); ev.Reason != events.ReasonCanceled {
		t.Fatalf("canceled event %+v", ev)
	}
}

func TestTelehealthAndDocumentTargets(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	c := noRedirect(nil)
	start := t0.Add(30 * time.Minute)
	tok, id := e.issue(spec{EventID: "ev-t", Purpose: events.PurposeTelehealth, AppointmentID: "appt-7", StartsAt: start, EndsAt: start.Add(time.Hour)})
	a := do(t, c, "GET", s.URL+"/l/"+tok)
	if a.status != 200 || !strings.Contains(a.body, "Join your video appointment") || !strings.Contains(a.body, "Wednesday 4 March 2026 at 4:30 AM (America/Chicago)") {
		t.Fatalf("telehealth confirm page: %d\n%s", a.status, a.body)
	}
	// Not one-time: every POST within the window gets in (a dropped call rejoins).
	for range 3 {
		cl := e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal/appointments/appt-7")
		if cl.Purpose != "telehealth" || cl.Link != id {
			t.Fatalf("claims %+v", cl)
		}
	}
	e.clock.Set(start.Add(time.Hour + 30*time.Minute)) // end + default grace
	do(t, c, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonExpired)

	// A practice without settings lands on the default portal.
	tok, _ = e.issue(spec{EventID: "ev-d", Practice: practicePlain, Purpose: events.PurposeDocument, DocumentID: "doc-1", ShareID: "sh-1"})
	a = do(t, c, "GET", s.URL+"/l/"+tok)
	if a.status != 200 || !strings.Contains(a.body, "Open your document") {
		t.Fatalf("document confirm page: %d\n%s", a.status, a.body)
	}
	e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+tok), e.defaultPortal.URL+"/documents/doc-1")
	do(t, c, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
}

func TestReturnToNeverLeavesThePortal(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	c := noRedirect(nil)
	portal, _ := url.Parse(e.portal.URL)
	for i, rt := range []string{"//evil.com", "https://evil.com", "/\\evil.com", "http:evil.com", "javascript:alert(1)",
		"evil.com/x", "/ok\r\nLocation: https://evil.com", "/%2F%2Fevil.com", "/docs#frag"} {
		tok, _ := e.issue(spec{EventID: fmt.Sprintf("ev-rt-%d", i), Client: fmt.Sprintf("c-rt-%d", i), ReturnTo: rt})
		a := do(t, c, "POST", s.URL+"/l/"+tok)
		if a.status != http.StatusSeeOther {
			t.Fatalf("%q: %d", rt, a.status)
		}
		u, err := url.Parse(a.header.Get("Location"))
		if err != nil || u.Scheme != portal.Scheme || u.Host != portal.Host || !strings.HasPrefix(u.Path, "/portal") || u.Query().Get("ticket") == "" {
			t.Fatalf("return_to %q redirected to %q", rt, a.header.Get("Location"))
		}
		switch rt {
		case "/%2F%2Fevil.com":
			if u.EscapedPath() != "/portal/%2F%2Fevil.com" {
				t.Fatalf("path %q", u.EscapedPath())
			}
		case "/docs#frag":
			if u.Path != "/portal/docs" || u.Fragment != "frag" {
				t.Fatalf("fragment: %q", a.header.Get("Location"))
			}
		default:
			if u.Path != "/portal" {
				t.Fatalf("return_to %q not refused: %q", rt, a.header.Get("Location"))
			}
		}
	}
}

func TestBadInputNeverFails(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	c := noRedirect(nil)
	good, _ := e.issue(spec{EventID: "ev-good"})
	forged := good[:len(good)-5] + "AAAAA"
	if forged == good {
		forged = good[:len(good)-5] + "BBBBB"
	}
	notFound := []string{
		forged,
		good[:len(good)-1],              // truncated
		good + "A",                      // one too long
		strings.Repeat("A", 10<<10),     // 10 KB
		"k1." + strings.Repeat("-", 43), // right shape, nothing issued
		"%00" + good,                    // NUL
		url.PathEscape("k1.ÅÄÖ€𝄞") + "xyz",           // unicode
		url.PathEscape(good + "\r\nSet-Cookie: x=1"), // CRLF
		url.PathEscape("<script>alert(1)</script>"),
		url.PathEscape(`"><script>alert(1)</script>`),
		"%ff%fe",
		"..%2f..%2fetc%2fpasswd",
		"a%2Fb",
	}
	for _, p := range notFound {
		for _, m := range []string{"GET", "POST", "HEAD"} {
			a := do(t, c, m, s.URL+"/l/"+p)
			if a.status != http.StatusNotFound {
				t.Fatalf("%s %.80q: %d, want 404\n%s", m, p, a.status, a.body)
			}
			if m != "HEAD" {
				a.refused(t, http.StatusNotFound, events.ReasonNotFound)
				if strings.Contains(a.body, "renew") {
					t.Fatalf("not_found page offers a renewal for %q", p)
				}
			}
			if strings.Contains(a.body, "<script") || strings.Contains(a.body, "alert(1)") || a.header.Get("Set-Cookie") != "" {
				t.Fatalf("%s %q: injection reflected:\n%s", m, p, a.body)
			}
		}
	}
	// Other shapes and methods: never 5xx.
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/l/" + good}, {"DELETE", "/l/" + good}, {"PATCH", "/l/" + good + "/renew"},
		{"GET", "/l/" + good + "/renew"}, {"GET", "/l/"}, {"POST", "/l/"}, {"GET", "/l"}, {"GET", "/l/a/b/c"},
		{"POST", "/l/a/b/c"}, {"GET", "/"}, {"GET", "/nothing"}, {"POST", "/.well-known/jwks.json"},
		{"GET", "/l/" + strings.Repeat("x/", 2000)}, {"OPTIONS", "/l/" + good},
	} {
		a := do(t, c, tc.method, s.URL+tc.path)
		if a.status >= 500 || a.status < 300 && tc.method != "OPTIONS" {
			t.Fatalf("%s %.60s: %d", tc.method, tc.path, a.status)
		}
	}
	// The good link survived all of it, and a cross-site browser POST is refused.
	req, _ := http.NewRequest("POST", s.URL+"/l/"+good, nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", s.URL+"/l/"+good, nil)
	req.Header.Set("Origin", "https://evil.example")
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d, want 403", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", s.URL+"/l/"+good, nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	e.ticketOf(t, s, answerOf(t, c, req), e.portal.URL+"/portal")
}

func answerOf(t testing.TB, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func TestHeadIsAScannerTouch(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-head"})
	c := noRedirect(nil)
	if a := do(t, c, "HEAD", s.URL+"/l/"+tok); a.status != 200 {
		t.Fatalf("HEAD: %d", a.status)
	}
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == 1 }, "touched")
	if ev := e.lastEvent(id, events.TypeTouched); !ev.Scanner {
		t.Fatalf("HEAD touch not flagged: %+v", ev)
	}
	req, _ := http.NewRequest("GET", s.URL+"/l/"+tok, nil)
	req.Header.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0 Safari/537.36")
	if a := answerOf(t, c, req); a.status != 200 {
		t.Fatalf("GET: %d", a.status)
	}
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == 2 }, "touched")
	if ev := e.lastEvent(id, events.TypeTouched); ev.Scanner || !strings.Contains(ev.UserAgent, "Chrome") {
		t.Fatalf("person's touch flagged: %+v", ev)
	}
	e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	// HEAD of a used link: 410, no expired event (HEAD has no side effects but the touch).
	if a := do(t, c, "HEAD", s.URL+"/l/"+tok); a.status != http.StatusGone {
		t.Fatalf("HEAD of a used link: %d", a.status)
	}
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeTouched)) == 3 }, "touched")
	if n := e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeExpired)); n != 0 {
		t.Fatalf("HEAD published %d expired events", n)
	}
}

func TestSameBrowserContinues(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-sb"})
	jar, _ := cookiejar.New(nil)
	browser := noRedirect(jar)
	a := do(t, browser, "POST", s.URL+"/l/"+tok)
	e.ticketOf(t, s, a, e.portal.URL+"/portal")
	sc := a.header.Get("Set-Cookie")
	for _, want := range []string{redeemer.SessionCookie + "=", "Path=/l/", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(sc, want) {
			t.Fatalf("Set-Cookie %q lacks %q", sc, want)
		}
	}
	// A browser-session cookie: no Max-Age (the 15 minutes are in its signed value).
	if strings.Contains(sc, "Secure") || strings.Contains(sc, "Max-Age") || strings.Contains(sc, tok) {
		t.Fatalf("Set-Cookie %q", sc)
	}

	// Same browser: straight through on GET and POST, session refreshed.
	e.clock.Advance(10 * time.Minute)
	first := e.ticketOf(t, s, do(t, browser, "GET", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	e.clock.Advance(10 * time.Minute) // 20 minutes after redemption, 10 after the refresh
	second := e.ticketOf(t, s, do(t, browser, "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal")
	if first.ID == second.ID || second.Link != id {
		t.Fatalf("tickets %+v %+v", first, second)
	}

	// Another browser: used.
	do(t, noRedirect(nil), "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
	other, _ := cookiejar.New(nil)
	do(t, noRedirect(other), "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)

	// A forged cookie does not pass.
	req, _ := http.NewRequest("GET", s.URL+"/l/"+tok, nil)
	req.AddCookie(&http.Cookie{Name: redeemer.SessionCookie, Value: id + "." + fmt.Sprint(e.clock.Now().Add(time.Hour).Unix()) + ".AAAAAAAAAAAAAAAAAAAAAA"})
	answerOf(t, noRedirect(nil), req).refused(t, http.StatusGone, events.ReasonUsed)

	// After the idle timeout the session is gone.
	e.clock.Advance(15*time.Minute + time.Second)
	do(t, browser, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
	do(t, browser, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)

	// The session does not outlive the link being superseded.
	tok2, _ := e.issue(spec{EventID: "ev-sb2"})
	e.ticketOf(t, s, do(t, browser, "POST", s.URL+"/l/"+tok2), e.portal.URL+"/portal")
	e.issue(spec{EventID: "ev-sb3"})
	do(t, browser, "GET", s.URL+"/l/"+tok2).refused(t, http.StatusGone, events.ReasonSuperseded)
}

func TestSecureCookieOnHTTPS(t *testing.T) {
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) { c.PublicURL = "https://links.test" })
	tok, _ := e.issue(spec{EventID: "ev-https"})
	a := do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok)
	if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("%d %q", a.status, a.header.Get("Set-Cookie"))
	}
}

func TestRenewIsRateLimitedAndAnswersAlike(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-renew", ReturnTo: "/bills"})
	c := noRedirect(nil)
	do(t, c, "POST", s.URL+"/l/"+tok) // use it
	var bodies []string
	for range 7 {
		a := do(t, c, "POST", s.URL+"/l/"+tok+"/renew")
		if a.status != 200 || !strings.Contains(html.UnescapeString(a.body), "If this link is on record, we've emailed a new one") {
			t.Fatalf("renew: %d\n%s", a.status, a.body)
		}
		bodies = append(bodies, a.body)
	}
	for _, p := range []string{"k1." + strings.Repeat("A", 43), "garbage", strings.Repeat("z", 5000)} {
		a := do(t, c, "POST", s.URL+"/l/"+p+"/renew")
		if a.status != 200 {
			t.Fatalf("renew of unknown token: %d", a.status)
		}
		bodies = append(bodies, a.body)
	}
	for i, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("answer %d differs:\n%s\n---\n%s", i, b, bodies[0])
		}
	}
	reqs := e.renewalRequests()
	if len(reqs) != 5 {
		t.Fatalf("%d renewal requests published, want 5 (the per-client limit)", len(reqs))
	}
	if rr := reqs[4]; rr.PracticeID != practiceAcme || rr.LinkID != id || !strings.HasPrefix(rr.EventID, "renew-") {
		t.Fatalf("renewal request %+v", rr)
	}
	// The request is narrow: the redeemer publishes no sign-in request and
	// no mail command, so it never names an address (the issuer resolves
	// the link to its address on record).
	if n := e.count(bus.StreamActions, events.SubjectSigninRequested) + e.count(bus.StreamMail, bus.MailCommandPrefix+">"); n != 0 {
		t.Fatalf("the redeemer published %d sign-in requests or mail commands", n)
	}
}

func TestRenewPerIPLimit(t *testing.T) {
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) { c.RenewIPBurst = 2 })
	c := noRedirect(nil)
	var first string
	for i := range 4 {
		tok, _ := e.issue(spec{EventID: fmt.Sprintf("ev-ip-%d", i), Client: fmt.Sprintf("c-ip-%d", i), Purpose: events.PurposeDocument, DocumentID: "d", ShareID: "s"})
		a := do(t, c, "POST", s.URL+"/l/"+tok+"/renew")
		if i == 0 {
			first = a.body
		}
		if a.status != 200 || a.body != first {
			t.Fatalf("renew %d: %d", i, a.status)
		}
	}
	if n := len(e.renewalRequests()); n != 2 {
		t.Fatalf("%d renewal requests, want 2 (the per-IP burst)", n)
	}
	// Time refills the bucket.
	e.clock.Advance(time.Minute)
	tok, _ := e.issue(spec{EventID: "ev-ip-late", Client: "c-ip-late"})
	do(t, c, "POST", s.URL+"/l/"+tok+"/renew")
	if n := len(e.renewalRequests()); n != 3 {
		t.Fatalf("%d renewal requests after refill, want 3", n)
	}
}

func TestOperationalRoutes(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, _ := e.issue(spec{EventID: "ev-ops"})
	c := noRedirect(nil)
	do(t, c, "GET", s.URL+"/l/"+tok)
	do(t, c, "POST", s.URL+"/l/"+tok)
	do(t, c, "POST", s.URL+"/l/"+tok)
	if a := do(t, c, "GET", s.URL+"/healthz"); a.status != 200 {
		t.Fatalf("healthz %d", a.status)
	}
	if a := do(t, c, "GET", s.URL+"/readyz"); a.status != 200 {
		t.Fatalf("readyz %d", a.status)
	}
	a := do(t, c, "GET", s.admin.URL+"/metrics")
	for _, want := range []string{
		`linkpipe_redeemer_clicks_total{method="GET",outcome="confirm"} 1`,
		`linkpipe_redeemer_clicks_total{method="POST",outcome="redeemed"} 1`,
		`linkpipe_redeemer_clicks_total{method="POST",outcome="refused"} 1`,
		`linkpipe_redeemer_redemptions_total{purpose="signin"} 1`,
		`linkpipe_redeemer_refusals_total{reason="used"} 1`,
		`linkpipe_redeemer_request_duration_seconds_bucket{route="post"`,
	} {
		if !strings.Contains(a.body, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	// Readiness follows the NATS connection.
	e.natsClosed.Store(true)
	e.nc.Close()
	if a := do(t, c, "GET", s.URL+"/readyz"); a.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with NATS closed: %d", a.status)
	}
	// With NATS gone a click is a 503 page that says the link was not used.
	tok2 := "k1." + strings.Repeat("Q", 43)
	if a := do(t, c, "GET", s.URL+"/l/"+tok2); a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "has not been used") {
		t.Fatalf("NATS down: %d\n%s", a.status, a.body)
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	e := newEnv(t)
	good := redeemer.Config{JS: e.js, NC: e.nc, Practices: e.dir, Signer: e.signer, PublicURL: "http://x", PortalURL: "http://p", CookieKey: make([]byte, 32)}
	for name, mod := range map[string]func(*redeemer.Config){
		"no js":          func(c *redeemer.Config) { c.JS = nil },
		"no signer":      func(c *redeemer.Config) { c.Signer = nil },
		"short key":      func(c *redeemer.Config) { c.CookieKey = c.CookieKey[:16] },
		"no portal":      func(c *redeemer.Config) { c.PortalURL = "" },
		"relative":       func(c *redeemer.Config) { c.PublicURL = "/x" },
		"portal w/query": func(c *redeemer.Config) { c.PortalURL = "http://p/?a=b" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := redeemer.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := redeemer.New(good); err != nil {
		t.Fatal(err)
	}
}
