package redeemer_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// TestBrowserClickThrough drives a real headless Chromium: open the link,
// see the confirm page, press its button, land on the portal with a ticket;
// open it again (same browser: straight through); open a superseded link
// (refusal page), press "Email me a new link".
func TestBrowserClickThrough(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.WindowSize(412, 860)) // a phone
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-browser", ReturnTo: "/home"})

	// The confirm page.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/l/"+tok), chromedp.WaitVisible(chromedp.CSS("button"))); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || !strings.Contains(title, "Acme Therapy") {
		t.Fatalf("title %q %v", title, err)
	}
	browsertest.Shot(ctx, t, "confirm.png")

	// Press the button: the POST redeems and the browser lands on the portal.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("button"))); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, e.portal.URL+"/portal/home?ticket=") {
		t.Fatalf("landed on %q", loc)
	}
	jwks := do(t, noRedirect(nil), "GET", s.URL+"/.well-known/jwks.json").body
	cl, err := ticket.Verify([]byte(jwks), u.Query().Get("ticket"), ticket.Want{Issuer: "http://links.test", Audience: e.portal.URL}, e.clock.Now())
	if err != nil || cl.Link != id || cl.Subject != "c-1" {
		t.Fatalf("portal's ticket: %+v %v", cl, err)
	}
	if h1, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1"))); !strings.Contains(h1, "Acme portal") {
		t.Fatalf("portal page h1 %q", h1)
	}
	e.mu.Lock()
	landed := 0
	for _, r := range e.landed {
		if r.URL.Query().Get("ticket") != "" { // (the browser also asks for /favicon.ico)
			landed++
		}
	}
	e.mu.Unlock()
	if landed != 1 {
		t.Fatalf("portal received %d tickets, want 1", landed)
	}

	// Same browser, same link again: straight through to the portal.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/l/"+tok)); err != nil {
		t.Fatal(err)
	}
	if loc, _ = chromedp.Run(ctx, chromedp.Location()); !strings.HasPrefix(loc, e.portal.URL+"/portal/home?ticket=") {
		t.Fatalf("re-click landed on %q", loc)
	}

	// A newer link makes this one superseded: the refusal page.
	e.issue(spec{EventID: "ev-browser-2"})
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/l/"+tok), chromedp.WaitVisible(chromedp.CSS("button"))); err != nil {
		t.Fatal(err)
	}
	reason, err := chromedp.Run(ctx, chromedp.EvaluateAsDevTools[string](`document.querySelector('meta[name="linkpipe-reason"]').content`))
	if err != nil || reason != "superseded" {
		t.Fatalf("reason %q %v", reason, err)
	}
	body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	if !strings.Contains(body, "A newer link was sent to you") || !strings.Contains(body, "Email me a new link") {
		t.Fatalf("refusal page text:\n%s", body)
	}
	browsertest.Shot(ctx, t, "refusal.png")

	// "Email me a new link" answers the renewal page.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("button"))); err != nil {
		t.Fatal(err)
	}
	if body, _ = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main"))); !strings.Contains(body, "If this link is on record, we've emailed a new one") {
		t.Fatalf("renewal page text:\n%s", body)
	}
	browsertest.Shot(ctx, t, "renewed.png")
	t.Logf("screenshots in %s", browsertest.ShotsDir)
}
