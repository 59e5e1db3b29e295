package mailer_test

import (
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/prometheus/client_golang/prometheus"
)

// TestForgedCommandMailsOnlyTheAddressOnRecord reproduces trust finding 2:
// with publish access to MAIL, a mail.cmd.* naming a live link id and its
// mint event id (both on LINKS) with any `to` made the mailer derive the
// live token and mail it there. Now the mailer sends a link only to the
// address on record for that link.
func TestForgedCommandMailsOnlyTheAddressOnRecord(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	e.start(t, sink, prometheus.NewRegistry())
	legit, _ := e.signin(t, "evt-forge", "pat@example.com") // the issuer records pat's address
	forged := *legit
	forged.MailID = "forged-1"
	forged.To = events.Client{ID: legit.To.ID, Email: "attacker@evil.test", Name: "Pat"}
	e.queue(t, &forged)

	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the forged command handled")
	for _, m := range messages(t, sink) {
		if m.To != "pat@example.com" {
			t.Fatalf("a live link was mailed to %q, not the address on record", m.To)
		}
	}
}
