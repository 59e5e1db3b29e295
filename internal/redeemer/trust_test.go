package redeemer_test

import (
	"context"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

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
