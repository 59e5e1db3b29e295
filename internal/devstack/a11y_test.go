package devstack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// devLanguages are the languages the dev pages (/dev, a run's page, the
// inbox, the demo portal) are checked in.
var devLanguages = []string{"en", "es"}

// TestDevPagesAccessible checks the pages of `linkpipe dev` with axe-core in
// Chromium, at desktop and phone widths: /dev (with and without an error),
// the inbox empty and with an email, one email's page, the demo portal
// with and without a ticket, each in English and Spanish, and the support
// view (empty, a client with a used link, an unknown client): no
// WCAG 2.1 AA violation nor breach of axe's best practices, and <html lang>
// in the page's language. Adding a page is one line in a table.
func TestDevPagesAccessible(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.Timeout(3*time.Minute))
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, lang := range devLanguages {
		browsertest.CheckPage(ctx, t, browsertest.Page{Name: "inbox-empty", Lang: lang, URL: st.URL + "/inbox"})
	}

	if _, err := events.Publish(context.Background(), st.JetStream(), &events.SigninRequested{
		Envelope: events.Envelope{EventID: "a11y-1", PracticeID: devstack.DemoPractice},
		Client:   events.Client{ID: "client-a11y", Email: "pat@example.com", Name: "Pat Example"},
		ReturnTo: "/messages",
	}); err != nil {
		t.Fatal(err)
	}
	var inbox []mailer.SinkMessage
	eventually.True(t, 20*time.Second, func() bool {
		resp, err := http.Get(st.URL + "/inbox.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&inbox) == nil && len(inbox) == 1 && len(inbox[0].Links) == 1
	}, "the sign-in email in the inbox")
	resp, _ := do(t, noRedirect(), "POST", inbox[0].Links[0])
	portal := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || portal == "" {
		t.Fatalf("confirming: %d %q", resp.StatusCode, portal)
	}

	// A scenario run with a step to take, and one with an email and both
	// links in its timeline.
	pn := panel{t, st}
	waiting := pn.start("reschedule")
	done := pn.start("document")
	pn.step(done, 1)
	pn.until(done, "both emails", func(r runJSON) bool { return len(r.Emails) == 2 && len(r.Links) == 2 }) // either order: step 2 follows at once
	// A bounced address, with a link whose email was refused: the run
	// page's delivery lines and verdicts in the page's language.
	bounced := pn.start("bounce")
	pn.until(bounced, "the sign-in email", func(r runJSON) bool { return len(r.Emails) == 1 })
	pn.step(bounced, 1)
	pn.until(bounced, "the bounce applied", func(r runJSON) bool { return len(r.Links) == 1 && r.Links[0].Suppressed })
	pn.step(bounced, 2)
	pn.until(bounced, "the refused email", func(r runJSON) bool { return len(r.Links) == 2 && r.Links[0].Mail != "" && r.Links[1].Mail != "" })

	for _, lang := range devLanguages {
		browsertest.CheckPages(ctx, t,
			browsertest.Page{Name: "dev", Lang: lang, URL: st.URL + "/dev"},
			browsertest.Page{Name: "dev-run-waiting", Lang: lang, URL: st.URL + "/dev/runs/" + waiting},
			browsertest.Page{Name: "dev-run-done", Lang: lang, URL: st.URL + "/dev/runs/" + done},
			browsertest.Page{Name: "dev-run-bounced", Lang: lang, URL: st.URL + "/dev/runs/" + bounced},
			browsertest.Page{Name: "dev-error", Lang: lang, URL: st.URL + "/dev?error=client.email%3A+not+an+address"},
			browsertest.Page{Name: "inbox", Lang: lang, URL: st.URL + "/inbox"},
			browsertest.Page{Name: "inbox-email", Lang: lang, URL: st.URL + "/inbox/" + inbox[0].ID},
			browsertest.Page{Name: "inbox-not-found", Lang: lang, URL: st.URL + "/inbox/nope"},
			browsertest.Page{Name: "portal", Lang: lang, URL: portal},
			browsertest.Page{Name: "portal-no-ticket", Lang: lang, URL: st.URL + "/portal/messages"},
			browsertest.Page{Name: "dev-run-missing", Lang: lang, URL: st.URL + "/dev/runs/run-gone"},
			browsertest.Page{Name: "support", Lang: lang, URL: st.URL + "/support"},
			browsertest.Page{Name: "support-client", Lang: lang, URL: st.URL + "/support?practice=" + devstack.DemoPractice + "&client=client-a11y"},
			browsertest.Page{Name: "support-unknown", Lang: lang, URL: st.URL + "/support?practice=" + devstack.DemoPractice + "&client=nobody"},
		)
	}
}
