package history_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// "Why didn't my client get the link?": a sign-in email bounced (the
// feedback consumer's bounced event and suppression), the next email to
// that address is not sent, explain says so in plain words with the
// command that lifts the suppression, and actions.address.unsuppressed
// (through the issuer) lifts it: the next email goes out.
func TestExplainShowsBounceAndSuppression(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	js := st.JetStream()
	client := events.Client{ID: "c-9", Email: "Rue@Example.com", Name: "Rue"}
	publish := func(a events.Action) {
		t.Helper()
		if _, err := events.Publish(ctx, js, a); err != nil {
			t.Fatal(err)
		}
	}
	explain := func() string {
		tl, err := history.Client(ctx, js, devstack.DemoPractice, client.ID)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		tl.Print(&b, time.Now())
		return b.String()
	}
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := explain()
			if ok(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("explain never showed %s:\n%s", what, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	env := func(id string) events.Envelope {
		return events.Envelope{EventID: id, PracticeID: devstack.DemoPractice}
	}
	publish(&events.SigninRequested{Envelope: env("b-1"), Client: client})
	waitFor("the sent email", func(s string) bool { return strings.Contains(s, " sent ") })
	tl, _ := history.Client(ctx, js, devstack.DemoPractice, client.ID)
	var first string
	for id := range tl.Scopes {
		first = id
	}

	// What the feedback consumer stores for SES's permanent bounce.
	at := time.Now().UTC().Truncate(time.Second)
	var sent events.LinkEvent
	if _, err := bus.NewReader(js, bus.StreamLinks).LastJSON(ctx, events.LinkSubject(first, events.TypeSent), &sent); err != nil {
		t.Fatal(err)
	}
	if err := suppress.NewList(js).Suppress(ctx, suppress.Hash(client.Email), &suppress.Entry{Cause: suppress.CauseBounce,
		Detail: "General: smtp; 550 5.1.1 user unknown", At: at, LinkID: first, MailID: sent.MailID, MessageID: sent.MessageID}); err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishEvent(ctx, js, &events.LinkEvent{EventID: "bounced-" + sent.MailID + "-fb1", Type: events.TypeBounced,
		LinkID: first, PracticeID: devstack.DemoPractice, ClientID: client.ID, Purpose: events.PurposeSignin, At: at,
		Reason: events.BouncePermanent, Detail: "General: smtp; 550 5.1.1 user unknown", MailID: sent.MailID, MessageID: sent.MessageID}); err != nil {
		t.Fatal(err)
	}
	out := waitFor("the bounce", func(s string) bool { return strings.Contains(s, "bounced") })
	clock := at.Format("2006-01-02 15:04Z")
	for _, want := range []string{
		"permanent bounce (mailbox does not exist)",
		"last email bounced (mailbox does not exist) at " + clock,
		"address suppressed since " + clock,
		"unsuppress with `linkpipe publish unsuppress --practice demo --email <the client's address>`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}

	// The next email to that address is not sent.
	publish(&events.SigninRequested{Envelope: env("b-2"), Client: client})
	out = waitFor("the suppressed email", func(s string) bool { return strings.Contains(s, "permanent failure: suppressed") })
	if !strings.Contains(out, "last email not sent: suppressed: the address bounced permanently") {
		t.Errorf("explain:\n%s", out)
	}

	// Lifted: the next email goes out, and explain tells when.
	publish(&events.AddressUnsuppressed{Envelope: env("b-3"), Email: "rue@example.com"})
	waitFor("the lift", func(s string) bool { return strings.Contains(s, "suppression lifted by b-3") })
	publish(&events.SigninRequested{Envelope: env("b-4"), Client: client})
	out = waitFor("the email after the lift", func(s string) bool { return strings.Count(s, "mail signin; message id") == 2 })
	if strings.Contains(out, "address suppressed since") || !strings.Contains(out, "address was suppressed, lifted at") {
		t.Errorf("explain after the lift:\n%s", out)
	}
	t.Log("\n" + out)
}
