package issuer_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
)

func renewal(eventID, linkID string) *events.RenewalRequested {
	return &events.RenewalRequested{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"}, LinkID: linkID}
}

// TestRenewalOfSigninAndDocumentLinks: a renewal request names only the
// link; the issuer mails the link's client, at the address on record, a
// fresh sign-in link landing where the link would have.
func TestRenewalOfSigninAndDocumentLinks(t *testing.T) {
	e := newEnv(t)
	e.start()
	s := signin("evt-rn1", "rue")
	s.ReturnTo = "/bills"
	e.publish(s)
	sh := share("evt-rn2", "rue", "sh-rn")
	sh.Client.Email = "rue.new@example.com" // the newest action names the client's current address
	e.publish(sh)
	e.waitIdle()
	signinLink := e.linkIDOf(events.PurposeSignin, "acme", "evt-rn1")
	docLink := e.linkIDOf(events.PurposeDocument, "acme", "evt-rn2")

	// Each goes to the client's current address (the newest action's).
	for _, c := range []struct {
		event, link, returnTo string
		to                    events.Client
	}{
		{"renew-a", signinLink, "/bills", sh.Client},
		{"renew-b", docLink, "/documents/" + sh.Document.ID, sh.Client},
	} {
		e.publish(renewal(c.event, c.link))
		e.waitIdle()
		cmd := e.mailFor(mail.KindSignin, c.event)
		iss := e.issued(cmd.LinkID)
		if cmd.To != c.to || cmd.Purpose != events.PurposeSignin || cmd.Scope != scope.Signin("acme", "rue") ||
			iss.ReturnTo != c.returnTo || iss.ClientID != "rue" || iss.CauseEventID != c.event {
			t.Fatalf("renewal of %s: mail %+v, issued %+v", c.link, cmd, iss)
		}
	}
	// The newest sign-in link is the renewal's: the clicked one is superseded.
	st, _ := e.scopeState(scope.Signin("acme", "rue"))
	if v := st.Verdict(signinLink, e.clk.Now()); v.Reason != events.ReasonSuperseded {
		t.Fatalf("the renewed link: %+v", v)
	}
	// The document link is untouched by the renewal.
	if v := e.verdict(scope.Document("acme", "rue", "sh-rn"), docLink, e.clk.Now()); !v.OK {
		t.Fatalf("document link after its renewal: %+v", v)
	}
	// A request for a link that does not exist is dead-lettered; nothing is mailed.
	before := e.mailCount()
	seq := e.publish(renewal("renew-x", "Lnosuchlink0000000000000"))
	e.waitIdle()
	if reason := e.deadLetters()[strconv.FormatUint(seq, 10)]; reason == "" || e.mailCount() != before {
		t.Fatalf("unknown link: dead letter %q, %d mails (was %d)", reason, e.mailCount(), before)
	}
}

// TestRenewalOfTelehealthLinks (moved from the redeemer, which no longer
// decides): a telehealth link's renewal mails the appointment's current
// link again, with its current window; when the appointment cannot be
// joined any more (canceled), a sign-in link to the appointment's page.
func TestRenewalOfTelehealthLinks(t *testing.T) {
	e := newApptEnv(t)
	starts := tA.Add(72 * time.Hour)
	a := scheduled("evt-tr1", "tess", "ap-tr", starts, true, nil)
	e.publish(a)
	e.waitIdle()
	linkID := e.linkIDOf(events.PurposeTelehealth, "acme", "evt-tr1")

	e.publish(renewal("renew-t1", linkID))
	e.waitIdle()
	cmd := e.mailFor(mail.KindAppointmentReminder, "renew-t1")
	tok, err := e.keys.Mint(cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID)
	if err != nil || cmd.LinkID != linkID || cmd.To != a.Client || !cmd.Appointment.StartsAt.Equal(starts) {
		t.Fatalf("telehealth renewal mail %+v (%v)", cmd, err)
	}
	if id := e.linkIDOfToken(tok); id != linkID {
		t.Fatalf("the mailer would derive link %s, want the current %s", id, linkID)
	}
	// After a reschedule the same link goes out with the new window.
	moved := starts.Add(24 * time.Hour)
	e.publish(rescheduled("evt-tr2", "ap-tr", moved))
	e.waitIdle()
	e.publish(renewal("renew-t2", linkID))
	e.waitIdle()
	if cmd := e.mailFor(mail.KindAppointmentReminder, "renew-t2"); cmd.LinkID != linkID || !cmd.Appointment.StartsAt.Equal(moved) {
		t.Fatalf("after the reschedule: %+v", cmd)
	}
	if n := len(e.mailCmds(mail.KindSignin)); n != 0 {
		t.Fatalf("%d sign-in links for a live telehealth appointment's renewal", n)
	}
	// Canceled: a sign-in link to the appointment's page instead.
	e.publish(canceled("evt-tr3", "ap-tr"))
	e.waitIdle()
	e.publish(renewal("renew-t3", linkID))
	e.waitIdle()
	in := e.mailFor(mail.KindSignin, "renew-t3")
	if iss := e.issued(in.LinkID); in.To != a.Client || iss.ReturnTo != "/appointments/ap-tr" {
		t.Fatalf("canceled appointment's renewal: %+v, issued %+v", in, iss)
	}
}

// linkIDOfToken is the link id of a token.
func (e *env) linkIDOfToken(tok string) string {
	e.t.Helper()
	id, err := link.ID(tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// TestRenewalGoesToTheClientsCurrentAddress reproduces review finding F1:
// a stranger holding an old link of the client (mailed to a mistyped
// address since corrected, the client's links since revoked) asks for a
// new link. The fresh sign-in link must go to the client's current
// address, never to the address the old link was mailed to.
func TestRenewalGoesToTheClientsCurrentAddress(t *testing.T) {
	e := newEnv(t)
	e.start()
	typo := signin("evt-typo", "rue")
	typo.Client.Email = "stranger@typo.example"
	e.publish(typo)
	e.publish(signin("evt-fixed", "rue")) // the practice corrects the address
	e.waitIdle()
	e.publish(revocation("evt-rv", "rue", "sent to the wrong address"))
	e.waitIdle()
	old := e.linkIDOf(events.PurposeSignin, "acme", "evt-typo")

	e.publish(renewal("renew-stranger", old))
	e.waitIdle()
	for _, cmd := range e.mailCmds(mail.KindSignin) {
		if cmd.CauseEventID == "renew-stranger" && cmd.To.Email != signin("x", "rue").Client.Email {
			t.Fatalf("the renewal mailed a live link to %q, not the client's current address", cmd.To.Email)
		}
	}
	cmd := e.mailFor(mail.KindSignin, "renew-stranger")
	if to, err := recipient.NewBook(e.js).Get(e.ctx, cmd.LinkID); err != nil || to.Email != "rue@example.com" {
		t.Fatalf("the renewed link's address on record: %+v %v", to, err)
	}
}
