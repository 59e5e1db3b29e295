package redeemer_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// doLang is do with an Accept-Language header ("" sends none).
func doLang(t *testing.T, c *http.Client, method, url, accept string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept-Language", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, string(b), resp.Header}
}

// practiceSol is a Spanish-speaking practice with a logo and a light accent.
const practiceSol = "sol"

func (e *env) putSol(t *testing.T) {
	t.Helper()
	if err := e.dir.Put(context.Background(), &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "p-sol", PracticeID: practiceSol},
		Practice: events.Practice{Name: "Clínica Sol", ReplyTo: "hola@sol.example", PortalURL: e.portal.URL + "/portal",
			Timezone: "Europe/Madrid", Locale: "es", LogoURL: "https://cdn.sol.example/logo.png", AccentColor: "#ffd27f"},
	}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if e.dir.Get(practiceSol).Locale == "es" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("practice sol never reached the directory")
}

// TestPagesInTheClientsLanguage: a page is in the browser's language when
// the catalogue has it, else the practice's, else English; it says so
// (<html lang>, Content-Language) and varies on Accept-Language so no cache
// serves one client's language to another.
func TestPagesInTheClientsLanguage(t *testing.T) {
	e := newEnv(t)
	e.putSol(t)
	s := e.start()
	c := noRedirect(nil)
	acme, _ := e.issue(spec{EventID: "ev-lang-acme"})
	sol, _ := e.issue(spec{EventID: "ev-lang-sol", Practice: practiceSol})

	for _, tc := range []struct {
		name, token, accept, lang, heading string
	}{
		{"browser asks for Spanish", acme, "es-MX,es;q=0.9,en;q=0.5", "es", "Iniciar sesión en su portal de clientes"},
		{"browser asks for English", sol, "en-GB,en;q=0.8", "en", "Sign in to your client portal"},
		{"no header, practice's Spanish", sol, "", "es", "Iniciar sesión en su portal de clientes"},
		{"unknown language, practice's Spanish", sol, "de-DE,de;q=0.9", "es", "Iniciar sesión en su portal de clientes"},
		{"no header, English practice", acme, "", "en", "Sign in to your client portal"},
		{"garbage header", acme, strings.Repeat("x;q=", 600), "en", "Sign in to your client portal"},
	} {
		a := doLang(t, c, "GET", s.URL+"/l/"+tc.token, tc.accept)
		if a.status != http.StatusOK || !strings.Contains(a.body, `<html lang="`+tc.lang+`">`) ||
			!strings.Contains(html.UnescapeString(a.body), "<h1>"+tc.heading+"</h1>") {
			t.Errorf("%s: %d, want lang %s and %q:\n%s", tc.name, a.status, tc.lang, tc.heading, a.body)
		}
		if a.header.Get("Content-Language") != tc.lang || !strings.Contains(a.header.Get("Vary"), "Accept-Language") {
			t.Errorf("%s: Content-Language %q, Vary %q", tc.name, a.header.Get("Content-Language"), a.header.Get("Vary"))
		}
	}
}

// TestRefusalsInSpanish: every refusal reason has its own Spanish heading,
// its plain-words explanation and renewal button in Spanish, and keeps its
// machine-readable reason code.
func TestRefusalsInSpanish(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	c := noRedirect(nil)
	r := e.refusals(t, s)
	used, superseded, expired, revoked := r[events.ReasonUsed], r[events.ReasonSuperseded], r[events.ReasonExpired], r[events.ReasonRevoked]
	canceled, early, unknown := r[events.ReasonCanceled], r[events.ReasonNotYetValid], r[events.ReasonNotFound]

	headings := map[string]bool{}
	for _, tc := range []struct{ token, reason, heading string }{
		{used, events.ReasonUsed, "Este enlace ya se usó"},
		{superseded, events.ReasonSuperseded, "Hay un enlace más reciente"},
		{expired, events.ReasonExpired, "Este enlace ha caducado"},
		{revoked, events.ReasonRevoked, "Este enlace fue desactivado"},
		{canceled, events.ReasonCanceled, ""},
		{early, events.ReasonNotYetValid, ""},
		{unknown, events.ReasonNotFound, ""},
	} {
		e.projectorIdle()
		a := doLang(t, c, "GET", s.URL+"/l/"+tc.token, "es")
		want := http.StatusGone
		if tc.reason == events.ReasonNotFound {
			want = http.StatusNotFound
		}
		body := html.UnescapeString(a.body)
		if a.status != want || a.reason() != tc.reason || !strings.Contains(a.body, `<html lang="es">`) {
			t.Errorf("%s: %d reason %q:\n%s", tc.reason, a.status, a.reason(), a.body)
			continue
		}
		en := doLang(t, c, "GET", s.URL+"/l/"+tc.token, "en")
		if strings.Contains(body, scope.Explain(tc.reason)) || !strings.Contains(html.UnescapeString(en.body), scope.Explain(tc.reason)) {
			t.Errorf("%s: the explanation is not translated:\n%s", tc.reason, body)
		}
		h := between(body, "<h1>", "</h1>")
		if tc.heading != "" && h != tc.heading {
			t.Errorf("%s: heading %q, want %q", tc.reason, h, tc.heading)
		}
		if h == "" || headings[h] || h == between(html.UnescapeString(en.body), "<h1>", "</h1>") {
			t.Errorf("%s: heading %q is missing, shared with another reason or English", tc.reason, h)
		}
		headings[h] = true
		if tc.reason != events.ReasonNotFound && !strings.Contains(body, "Enviarme un enlace nuevo") {
			t.Errorf("%s: no Spanish renewal button:\n%s", tc.reason, body)
		}
		if !strings.Contains(body, tc.reason) {
			t.Errorf("%s: the reason code is gone:\n%s", tc.reason, body)
		}
	}
	// The renewal answer, whatever the token, in Spanish.
	a := doLang(t, c, "POST", s.URL+"/l/"+superseded+"/renew", "es")
	b := doLang(t, c, "POST", s.URL+"/l/garbage/renew", "es")
	if a.status != http.StatusOK || a.body != b.body || !strings.Contains(html.UnescapeString(a.body), "<h1>Revise su correo</h1>") {
		t.Errorf("renewal answer: %d\n%s\n---\n%s", a.status, a.body, b.body)
	}
}

// TestPagesCarryThePracticesBrand: the confirm and refusal pages of a
// branded practice show its logo (its name as the text alternative; the
// CSP allows images from the logo's origin only) and its accent, darkened
// to keep white button text at 4.5:1; a page that names no practice shows
// neither (the renewal answer must not tell whose link a token was).
func TestPagesCarryThePracticesBrand(t *testing.T) {
	e := newEnv(t)
	e.putSol(t)
	s := e.start()
	c := noRedirect(nil)
	tok, _ := e.issue(spec{EventID: "ev-brand", Practice: practiceSol})
	accent := practice.Accessible("#ffd27f", practice.DefaultAccent)
	if accent == "#ffd27f" {
		t.Fatal("#ffd27f is too light for white text and must be darkened")
	}
	check := func(name string, a answer) {
		t.Helper()
		csp := a.header.Get("Content-Security-Policy")
		if !strings.Contains(a.body, `<img class="logo" src="https://cdn.sol.example/logo.png" alt="Clínica Sol"`) ||
			!strings.Contains(csp, "img-src https://cdn.sol.example") || !strings.Contains(a.body, "background:"+accent) {
			t.Errorf("%s: no logo, CSP img-src or accent %s (CSP %q):\n%s", name, accent, csp, a.body)
		}
	}
	check("confirm", doLang(t, c, "GET", s.URL+"/l/"+tok, ""))
	do(t, c, "POST", s.URL+"/l/"+tok)
	check("refusal", doLang(t, c, "GET", s.URL+"/l/"+tok, ""))

	a := doLang(t, c, "POST", s.URL+"/l/"+tok+"/renew", "")
	if strings.Contains(a.body, "sol.example") || strings.Contains(a.body, "Clínica") || strings.Contains(a.header.Get("Content-Security-Policy"), "img-src") {
		t.Errorf("renewal answer names the practice:\n%s", a.body)
	}
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return ""
	}
	s = s[i+len(from):]
	if j := strings.Index(s, to); j >= 0 {
		return s[:j]
	}
	return ""
}

// issuers returns link, which issues the link called name (event id
// prefix+name, client c-<name> unless sp names one), and telehealth, which
// issues one for an appointment two hours away.
func (e *env) issuers(prefix string) (link func(name string, sp spec) (string, string), telehealth func(name string) (string, string)) {
	link = func(name string, sp spec) (string, string) {
		sp.EventID = prefix + name
		if sp.Client == "" {
			sp.Client = "c-" + name
		}
		return e.issue(sp)
	}
	telehealth = func(name string) (string, string) {
		start := e.clock.Now().Add(2 * time.Hour)
		return link(name, spec{Purpose: events.PurposeTelehealth, AppointmentID: "a-" + name, StartsAt: start, EndsAt: start.Add(50 * time.Minute)})
	}
	return link, telehealth
}

// refusals issues one link of each refusal reason (a token that matches no
// link for not_found) on server s, and returns their tokens by reason.
func (e *env) refusals(t *testing.T, s *server) map[string]string {
	t.Helper()
	c := noRedirect(nil)
	now := e.clock.Now()
	link, telehealth := e.issuers("ev-refusal-")
	out := map[string]string{}
	out[events.ReasonUsed], _ = link("used", spec{})
	do(t, c, "POST", s.URL+"/l/"+out[events.ReasonUsed])
	out[events.ReasonSuperseded], _ = link("superseded", spec{Client: "c-twice"})
	link("newer", spec{Client: "c-twice"})
	tok, id := link("expired", spec{})
	out[events.ReasonExpired] = tok
	e.change(id, func(st *scope.State) { st.ExpiresAt = now.Add(-time.Minute) })
	out[events.ReasonRevoked], _ = link("revoked", spec{})
	e.revokeClient(practiceAcme, "c-revoked", "client asked")
	tok, id = telehealth("canceled")
	out[events.ReasonCanceled] = tok
	if err := e.cancel(id); err != nil {
		t.Fatal(err)
	}
	tok, id = telehealth("early")
	out[events.ReasonNotYetValid] = tok
	e.change(id, func(st *scope.State) { st.ValidFrom = now.Add(time.Hour) })
	unknown, err := e.keys.Mint(e.keys.CurrentKid(), events.PurposeSignin, "scope.acme.nobody.signin", "ev-never")
	if err != nil {
		t.Fatal(err)
	}
	out[events.ReasonNotFound] = unknown
	return out
}
