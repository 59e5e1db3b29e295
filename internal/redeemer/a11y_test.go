package redeemer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/time/rate"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/redeemer"
)

// pageLanguages are the languages every page is checked in (asked for with
// Accept-Language); TestEveryPageLanguageIsChecked keeps it in step with the
// catalogue.
var pageLanguages = []string{"en", "es"}

// TestEveryPageLanguageIsChecked: a language added to the catalogue is
// checked for accessibility too.
func TestEveryPageLanguageIsChecked(t *testing.T) {
	var got []string
	for _, tag := range locale.Supported() {
		got = append(got, tag.String())
	}
	if strings.Join(got, ",") != strings.Join(pageLanguages, ",") {
		t.Errorf("catalogue has %v, accessibility checks %v", got, pageLanguages)
	}
}

// TestPagesAccessible checks every page the redeemer serves with axe-core
// in Chromium, at desktop and phone widths: the confirm page of each link
// kind (the telehealth one is the waiting room's way in), the refusal page
// of each reason, the renewal answer, the rate-limit page, the cross-site
// refusal and the page of a replica that lost NATS: no WCAG 2.1 AA
// violation nor breach of axe's best practices (landmarks, one h1), and
// <html lang> in the page's language. Adding a page is one line in the
// table.
func TestPagesAccessible(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.Timeout(4*time.Minute))
	e := newEnv(t)
	s := e.start(func(c *redeemer.Config) { c.RenewPerIP, c.RenewIPBurst = rate.Inf, 1 })
	c := noRedirect(nil)
	link, telehealth := e.issuers("ev-a11y-")
	refused := func(tok, reason string) string {
		status := http.StatusGone
		if reason == events.ReasonNotFound {
			status = http.StatusNotFound
		}
		do(t, c, "GET", s.URL+"/l/"+tok).refused(t, status, reason)
		return s.URL + "/l/" + tok
	}

	signin, _ := link("signin", spec{})
	e.putSol(t)
	branded, _ := link("branded", spec{Practice: practiceSol})
	brandedUsed, _ := link("branded-used", spec{Practice: practiceSol})
	do(t, c, "POST", s.URL+"/l/"+brandedUsed)
	doc, _ := link("document", spec{Purpose: events.PurposeDocument, DocumentID: "d-1", ShareID: "sh-1"})
	tele, _ := telehealth("telehealth")

	r := e.refusals(t, s)
	used, superseded, expired, revoked := r[events.ReasonUsed], r[events.ReasonSuperseded], r[events.ReasonExpired], r[events.ReasonRevoked]
	canceled, early, unknown := r[events.ReasonCanceled], r[events.ReasonNotYetValid], r[events.ReasonNotFound]
	renew, _ := link("renew", spec{Client: "c-renew"})
	link("renew-newer", spec{Client: "c-renew"})

	// A form on another site posting to a link: the redeemer refuses it (403).
	crossSite := browsertest.ServeHTML(t, `<!doctype html><html lang="en"><title>elsewhere</title>
<form method="post" action="`+s.URL+"/l/"+signin+`"><button>go</button></form></html>`)
	limited := e.start(func(c *redeemer.Config) { c.ClickPerIP, c.ClickIPBurst = rate.Every(time.Hour), 1 })
	do(t, c, "GET", limited.URL+"/l/"+signin) // uses up this IP's clicks
	if a := do(t, c, "GET", limited.URL+"/l/"+signin); a.status != http.StatusTooManyRequests {
		t.Fatalf("over the click limit: %d\n%s", a.status, a.body)
	}

	// A replica that lost NATS: "Please try again in a minute" (503).
	lost := newEnv(t)
	lostSrv := lost.start()
	lostTok, _ := lost.issue(spec{EventID: "ev-a11y-lost"})
	lost.natsClosed.Store(true)
	lost.nc.Close()
	if a := do(t, c, "GET", lostSrv.URL+"/l/"+lostTok); a.status != http.StatusServiceUnavailable {
		t.Fatalf("without NATS: %d\n%s", a.status, a.body)
	}

	press := chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("form button")))
		return err
	})
	for _, lang := range pageLanguages {
		browsertest.CheckPages(ctx, t,
			browsertest.Page{Name: "confirm-signin", Lang: lang, URL: s.URL + "/l/" + signin},
			browsertest.Page{Name: "confirm-document", Lang: lang, URL: s.URL + "/l/" + doc},
			browsertest.Page{Name: "confirm-telehealth", Lang: lang, URL: s.URL + "/l/" + tele},
			browsertest.Page{Name: "confirm-branded", Lang: lang, URL: s.URL + "/l/" + branded},
			browsertest.Page{Name: "refusal-branded", Lang: lang, URL: s.URL + "/l/" + brandedUsed}, // used: the practice speaks Spanish, refused() reads English
			browsertest.Page{Name: "refusal-used", Lang: lang, URL: refused(used, events.ReasonUsed)},
			browsertest.Page{Name: "refusal-superseded", Lang: lang, URL: refused(superseded, events.ReasonSuperseded)},
			browsertest.Page{Name: "refusal-expired", Lang: lang, URL: refused(expired, events.ReasonExpired)},
			browsertest.Page{Name: "refusal-revoked", Lang: lang, URL: refused(revoked, events.ReasonRevoked)},
			browsertest.Page{Name: "refusal-canceled", Lang: lang, URL: refused(canceled, events.ReasonCanceled)},
			browsertest.Page{Name: "refusal-not_yet_valid", Lang: lang, URL: refused(early, events.ReasonNotYetValid)},
			browsertest.Page{Name: "refusal-not_found", Lang: lang, URL: refused(unknown, events.ReasonNotFound)},
			browsertest.Page{Name: "renewed", Lang: lang, URL: refused(renew, events.ReasonSuperseded),
				Then: press},
			browsertest.Page{Name: "limited", Lang: lang, URL: limited.URL + "/l/" + signin},
			browsertest.Page{Name: "forbidden", Lang: lang, URL: crossSite, Then: press},
			browsertest.Page{Name: "unavailable", Lang: lang, URL: lostSrv.URL + "/l/" + lostTok},
		)
	}
}
