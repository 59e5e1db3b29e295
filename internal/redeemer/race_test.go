package redeemer_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

// raceClick is one click of a race and what had happened when it started.
type raceClick struct {
	method string
	phase  string // "before", "racing", "after" the change
	// afterChange: the change's publish had returned. afterOK, afterRefusal:
	// some click had already received a usable answer / a refusal.
	afterChange, afterOK, afterRefusal bool
	ans                                answer
	err                                error
}

func (c raceClick) String() string {
	return fmt.Sprintf("%s (%s; after change %v, after an OK %v, after a refusal %v): %d %q",
		c.method, c.phase, c.afterChange, c.afterOK, c.afterRefusal, c.ans.status, c.ans.reason())
}

// race clicks tok 50 times, alternating methods and replicas: 5 clicks one
// after the other before change runs, 20 concurrent clicks released
// together with change, then 25 concurrent clicks after change returned.
// ok says whether an answer let the person in.
func race(t *testing.T, servers []*server, tok string, methods []string, change func() error, ok func(answer) bool) []raceClick {
	t.Helper()
	var (
		changed, okSeen, refusedSeen atomic.Bool
		mu                           sync.Mutex
		clicks                       []raceClick
		n                            atomic.Int64
	)
	click := func(phase string) {
		i := int(n.Add(1))
		c := raceClick{method: methods[i%len(methods)], phase: phase,
			afterChange: changed.Load(), afterOK: okSeen.Load(), afterRefusal: refusedSeen.Load()}
		c.ans, c.err = doE(noRedirect(nil), c.method, servers[(i/len(methods))%len(servers)].URL+"/l/"+tok)
		if c.err == nil {
			if ok(c.ans) {
				okSeen.Store(true)
			} else {
				refusedSeen.Store(true)
			}
		}
		mu.Lock()
		clicks = append(clicks, c)
		mu.Unlock()
	}
	for range 5 {
		click("before")
	}
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var changeErr error
	wg.Go(func() {
		<-gate
		changeErr = change()
		changed.Store(true)
	})
	for range 20 {
		wg.Go(func() { <-gate; click("racing") })
	}
	close(gate)
	wg.Wait()
	if changeErr != nil {
		t.Fatal(changeErr)
	}
	for range 25 {
		wg.Go(func() { click("after") })
	}
	wg.Wait()
	for _, c := range clicks {
		if c.err != nil {
			t.Fatalf("click failed: %v", c.err)
		}
		if c.ans.status >= 500 {
			t.Fatalf("5xx: %s\n%s", c, c.ans.body)
		}
	}
	return clicks
}

// TestRescheduleRacingClicks: a telehealth link whose window has ended is
// clicked while a reschedule moves the appointment into the future. Every
// answer is "in" (303 to the appointment; a GET's confirm page) or 410
// expired; every click that starts after the reschedule was written, or
// after someone got in, gets in.
func TestRescheduleRacingClicks(t *testing.T) {
	e := newEnv(t)
	servers := []*server{e.start(), e.start()}
	start := t0.Add(time.Hour)
	tok, id := e.issue(spec{EventID: "ev-rr", Client: "c-rr", Purpose: events.PurposeTelehealth, AppointmentID: "ap-rr",
		StartsAt: start, EndsAt: start.Add(50 * time.Minute)})
	e.clock.Set(start.Add(50*time.Minute + 30*time.Minute)) // end + grace: over
	target := e.portal.URL + "/portal/appointments/ap-rr?ticket="
	in := func(a answer) bool {
		return a.status == http.StatusSeeOther && strings.HasPrefix(a.header.Get("Location"), target) ||
			a.status == http.StatusOK && strings.Contains(a.body, `<meta name="linkpipe-page" content="confirm">`)
	}
	later := e.clock.Now().Add(time.Hour)
	clicks := race(t, servers, tok, []string{"GET", "POST"}, func() error {
		return e.reschedule(id, later, later.Add(50*time.Minute))
	}, in)

	var got, refused int
	for _, c := range clicks {
		switch {
		case in(c.ans):
			if c.method == "GET" && c.ans.status != http.StatusOK || c.method == "POST" && c.ans.status != http.StatusSeeOther {
				t.Fatalf("%s", c)
			}
			got++
		case c.ans.status == http.StatusGone && c.ans.reason() == events.ReasonExpired:
			refused++
			if c.phase != "before" && (c.afterChange || c.afterOK) {
				t.Fatalf("refused although it started after the reschedule or after someone got in: %s", c)
			}
		default:
			t.Fatalf("neither in nor 410 expired: %s\n%s", c, c.ans.body)
		}
		if c.phase == "before" && in(c.ans) {
			t.Fatalf("got in before the reschedule: %s", c)
		}
	}
	if got < 25 || refused < 5 || got+refused != 50 {
		t.Fatalf("%d in, %d refused", got, refused)
	}
	t.Logf("%d clicks got in, %d were refused as expired", got, refused)
}

// TestCancelRacingClicks: a live telehealth link is redeemed by 50 POSTs
// while the appointment is canceled. Every answer is 303 or 410 canceled;
// every click that starts after the cancel was written, or after someone
// was refused, is refused; the projector publishes one revoked event with
// reason canceled.
func TestCancelRacingClicks(t *testing.T) {
	e := newEnv(t)
	servers := []*server{e.start(), e.start()}
	start := t0.Add(10 * time.Minute)
	tok, id := e.issue(spec{EventID: "ev-cr", Client: "c-cr", Purpose: events.PurposeTelehealth, AppointmentID: "ap-cr",
		StartsAt: start, EndsAt: start.Add(50 * time.Minute)})
	target := e.portal.URL + "/portal/appointments/ap-cr?ticket="
	in := func(a answer) bool {
		return a.status == http.StatusSeeOther && strings.HasPrefix(a.header.Get("Location"), target)
	}
	clicks := race(t, servers, tok, []string{"POST"}, func() error { return e.cancel(id) }, in)

	var got, refused int
	for _, c := range clicks {
		switch {
		case in(c.ans):
			got++
			if c.afterChange || c.afterRefusal {
				t.Fatalf("got in although it started after the cancel or after a refusal: %s", c)
			}
		case c.ans.status == http.StatusGone && c.ans.reason() == events.ReasonCanceled:
			refused++
			if c.phase == "before" {
				t.Fatalf("refused before the cancel: %s", c)
			}
		default:
			t.Fatalf("neither 303 nor 410 canceled: %s\n%s", c, c.ans.body)
		}
	}
	if got < 5 || refused < 25 || got+refused != 50 {
		t.Fatalf("%d in, %d refused", got, refused)
	}
	t.Logf("%d clicks got in, %d were refused as canceled", got, refused)

	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeRevoked)) >= 1 }, "revoked event")
	e.projectorIdle()
	if n := e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeRevoked)); n != 1 {
		t.Fatalf("%d revoked events, want 1", n)
	}
	if ev := e.lastEvent(id, events.TypeRevoked); ev.Reason != events.ReasonCanceled || ev.ClientID != "c-cr" || ev.Purpose != events.PurposeTelehealth {
		t.Fatalf("revoked event %+v", ev)
	}
}

// TestRevocationOnEveryReplica: revoking a client's links stops its
// sign-in, document and telehealth links at once on every replica, even
// those that have just served them (the issued record is cached, the
// scope state never is), and leaves other clients' links alone.
func TestRevocationOnEveryReplica(t *testing.T) {
	e := newEnv(t)
	servers := []*server{e.start(), e.start()}
	const client = "c-rv"
	start := t0.Add(2 * time.Hour)
	signin, _ := e.issue(spec{EventID: "ev-rv-1", Client: client})
	doc, _ := e.issue(spec{EventID: "ev-rv-2", Client: client, Purpose: events.PurposeDocument, DocumentID: "d-rv", ShareID: "sh-rv"})
	tele, _ := e.issue(spec{EventID: "ev-rv-3", Client: client, Purpose: events.PurposeTelehealth, AppointmentID: "ap-rv",
		StartsAt: start, EndsAt: start.Add(time.Hour)})
	other, _ := e.issue(spec{EventID: "ev-rv-4", Client: "c-rv-other"})
	tokens := []string{signin, doc, tele}
	for _, s := range servers { // both replicas serve (and cache) them
		for _, tok := range append(tokens, other) {
			if a := do(t, noRedirect(nil), "GET", s.URL+"/l/"+tok); a.status != http.StatusOK {
				t.Fatalf("before the revocation: %d %q", a.status, a.reason())
			}
		}
	}

	e.revokeClient(practiceAcme, client, "client asked")

	type result struct {
		what string
		a    answer
		err  error
	}
	results := make(chan result, 2*len(tokens)*2)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for si, s := range servers {
		for ti, tok := range tokens {
			for _, m := range []string{"GET", "POST"} {
				wg.Go(func() {
					<-gate
					a, err := doE(noRedirect(nil), m, s.URL+"/l/"+tok)
					results <- result{fmt.Sprintf("replica %d, link %d, %s", si, ti, m), a, err}
				})
			}
		}
	}
	close(gate)
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.a.status != http.StatusGone || r.a.reason() != events.ReasonRevoked {
			t.Fatalf("%s: %d %q, want 410 revoked", r.what, r.a.status, r.a.reason())
		}
	}
	for _, s := range servers {
		if a := do(t, noRedirect(nil), "GET", s.URL+"/l/"+other); a.status != http.StatusOK {
			t.Fatalf("another client's link: %d %q", a.status, a.reason())
		}
	}
	for _, tok := range tokens {
		id := linkIDOf(t, tok)
		eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamLinks, events.LinkSubject(id, events.TypeRevoked)) == 1 }, "revoked event")
		if ev := e.lastEvent(id, events.TypeRevoked); ev.Reason != "client asked" || ev.ClientID != client {
			t.Fatalf("revoked event %+v", ev)
		}
	}
}
