package issuer_test

import (
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// TestUnsuppressedActionLiftsTheSuppression: actions.address.unsuppressed
// lifts an address's suppression (whatever the case of the address),
// records who lifted it, and an unsuppress of an address that is not
// suppressed changes nothing.
func TestUnsuppressedActionLiftsTheSuppression(t *testing.T) {
	e := newEnv(t)
	e.start()
	list := suppress.NewList(e.js)
	hash := suppress.Hash("rue@example.com")
	if err := list.Suppress(e.ctx, hash, &suppress.Entry{Cause: suppress.CauseComplaint, At: e.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	e.publish(&events.AddressUnsuppressed{Envelope: events.Envelope{EventID: "unsup-1", PracticeID: "acme"}, Email: "Rue@Example.com"})
	e.publish(&events.AddressUnsuppressed{Envelope: events.Envelope{EventID: "unsup-2", PracticeID: "acme"}, Email: "nobody@example.com"})
	e.waitIdle()
	if _, ok, err := list.Check(e.ctx, "rue@example.com"); ok || err != nil {
		t.Fatalf("still suppressed: %v", err)
	}
	got, ok, err := list.Lookup(e.ctx, hash)
	if err != nil || !ok || got.Active() || got.LiftedBy != "unsup-1" || got.LiftedPractice != "acme" || got.Cause != suppress.CauseComplaint {
		t.Fatalf("entry after the lift: %+v %v %v", got, ok, err)
	}
	if _, ok, _ := list.Lookup(e.ctx, suppress.Hash("nobody@example.com")); ok {
		t.Fatal("an unsuppress created an entry")
	}
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}
