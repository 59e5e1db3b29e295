package redeemer_test

import (
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
)

func linkIDOf(t testing.TB, tok string) string {
	t.Helper()
	id, err := link.ID(tok)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSameBrowserContinuesDocument: a used document link, re-clicked in
// the browser that redeemed it while its session is live, goes on to the
// document; any other browser, or the same one after 15 idle minutes, is
// told it was used.
func TestSameBrowserContinuesDocument(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	tok, id := e.issue(spec{EventID: "ev-sbd", Purpose: events.PurposeDocument, DocumentID: "doc-42", ShareID: "sh-42"})
	target := e.portal.URL + "/portal/documents/doc-42"
	jarA, _ := cookiejar.New(nil)
	jarB, _ := cookiejar.New(nil)
	browserA, browserB := noRedirect(jarA), noRedirect(jarB)

	if cl := e.ticketOf(t, s, do(t, browserA, "POST", s.URL+"/l/"+tok), target); cl.Purpose != events.PurposeDocument || cl.Link != id {
		t.Fatalf("claims %+v", cl)
	}
	e.clock.Advance(14 * time.Minute)
	e.ticketOf(t, s, do(t, browserA, "GET", s.URL+"/l/"+tok), target)
	e.clock.Advance(14 * time.Minute) // 28 minutes after the redemption, 14 after the last click
	e.ticketOf(t, s, do(t, browserA, "POST", s.URL+"/l/"+tok), target)

	do(t, browserB, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
	do(t, browserB, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)

	e.clock.Advance(15*time.Minute + time.Second)
	do(t, browserA, "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
	do(t, browserA, "POST", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonUsed)
}

// TestTelehealthWaitingRoom: a telehealth link clicked days before the
// appointment opens the appointment's page in the portal (the waiting
// room), not an error.
func TestTelehealthWaitingRoom(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	start := t0.Add(5 * 24 * time.Hour)
	tok, id := e.issue(spec{EventID: "ev-wr", Purpose: events.PurposeTelehealth, AppointmentID: "ap-wr",
		StartsAt: start, EndsAt: start.Add(50 * time.Minute)})
	e.clock.Advance(24 * time.Hour) // four days before (and after the switch to daylight time)
	c := noRedirect(nil)
	a := do(t, c, "GET", s.URL+"/l/"+tok)
	if a.status != http.StatusOK || a.reason() != "" || !strings.Contains(a.body, "Join your video appointment") ||
		!strings.Contains(a.body, "Monday 9 March 2026 at 5:00 AM (America/Chicago)") {
		t.Fatalf("days before: %d %q\n%s", a.status, a.reason(), a.body)
	}
	cl := e.ticketOf(t, s, do(t, c, "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal/appointments/ap-wr")
	if cl.Purpose != events.PurposeTelehealth || cl.Link != id {
		t.Fatalf("claims %+v", cl)
	}
	// And again (a multi-use link), from another browser.
	e.ticketOf(t, s, do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok), e.portal.URL+"/portal/appointments/ap-wr")
}
