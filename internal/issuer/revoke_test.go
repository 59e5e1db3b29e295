package issuer_test

import (
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

func share(eventID, client, shareID string) *events.DocumentShared {
	return &events.DocumentShared{
		Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Client:   events.Client{ID: client, Email: client + "@example.com"},
		Document: events.Document{ID: "doc-" + shareID, Title: "Care plan"}, ShareID: shareID,
	}
}

func TestRevocationStopsEveryLiveLinkOfTheClient(t *testing.T) {
	e := newApptEnv(t)
	e.publish(signin("evt-v1", "nia"))
	e.publish(share("evt-v2", "nia", "sh-v"))
	e.publish(scheduled("evt-v3", "nia", "ap-v1", tA.Add(96*time.Hour), true, nil))
	e.publish(scheduled("evt-v4", "nia", "ap-v2", tA.Add(96*time.Hour), false, nil))
	e.publish(share("evt-v5", "nia", "sh-used"))
	e.publish(signin("evt-v6", "oli"))
	e.waitIdle()
	// nia already used one document link (what the redeemer writes).
	usedScope := scope.Document("acme", "nia", "sh-used")
	st, seq := e.scopeState(usedScope)
	st.Change, st.UsedAt, st.EventID, st.At = scope.ChangeUsed, tp(tA), "click-1", tA
	if _, err := scope.NewStore(e.js).Update(e.ctx, usedScope, seq, &st); err != nil {
		t.Fatal(err)
	}

	e.clk.Advance(time.Hour)
	now := e.clk.Now()
	seqR := e.publish(revocation("evt-rv1", "nia", "lost phone"))
	e.waitIdle()
	live := map[string]string{
		scope.Signin("acme", "nia"):               e.linkIDOf(events.PurposeSignin, "acme", "evt-v1"),
		scope.Document("acme", "nia", "sh-v"):     e.linkIDOf(events.PurposeDocument, "acme", "evt-v2"),
		scope.Appointment("acme", "nia", "ap-v1"): e.linkIDOf(events.PurposeTelehealth, "acme", "evt-v3"),
	}
	for subject, linkID := range live {
		st, _ := e.scopeState(subject)
		if st.Change != scope.ChangeRevoked || st.RevokedAt == nil || !st.RevokedAt.Equal(now) || st.RevokedReason != "lost phone" ||
			st.EventID != "evt-rv1" || st.ActionSeq != seqR || st.LinkID != linkID {
			t.Errorf("%s: %+v", subject, st)
		}
		if v := st.Verdict(linkID, now); v.Reason != events.ReasonRevoked {
			t.Errorf("%s: %+v, want revoked", subject, v)
		}
	}
	// Untouched: the in-person appointment (no link), another client. The
	// used link has not expired: it is revoked too (review finding F2), so
	// the browser that redeemed it cannot continue.
	if n := e.scopeCount(scope.Appointment("acme", "nia", "ap-v2")); n != 1 {
		t.Errorf("in-person appointment scope: %d states", n)
	}
	if v := e.verdict(usedScope, e.linkIDOf(events.PurposeDocument, "acme", "evt-v5"), now); v.Reason != events.ReasonRevoked {
		t.Errorf("used, unexpired link: %+v, want revoked", v)
	}
	oliLink := e.linkIDOf(events.PurposeSignin, "acme", "evt-v6")
	if v := e.verdict(scope.Signin("acme", "oli"), oliLink, now); !v.OK {
		t.Errorf("another client's link: %+v", v)
	}
	if got := e.metric(e.reg, "linkpipe_issuer_links_revoked_total", nil); got != 4 { // 3 live + the used, unexpired one
		t.Errorf("revoked counted %v, want 4", got)
	}
	counts := func() map[string]uint64 {
		out := map[string]uint64{}
		subs, _ := e.scopesR.Subjects(e.ctx, "scope.acme.>")
		for s, n := range subs {
			out[s] = n
		}
		return out
	}
	before := counts()
	// Idempotent.
	e.publishRaw(events.SubjectClientLinksRevoked, "evt-rv1-again", e.marshal(revocation("evt-rv1", "nia", "lost phone")))
	e.waitIdle()
	if after := counts(); !equalCounts(before, after) {
		t.Errorf("a re-published revocation wrote: %v -> %v", before, after)
	}

	// A later sign-in request issues a fresh link that works...
	e.clk.Advance(time.Minute)
	e.publish(signin("evt-v7", "nia"))
	e.waitIdle()
	fresh := e.linkIDOf(events.PurposeSignin, "acme", "evt-v7")
	if v := e.verdict(scope.Signin("acme", "nia"), fresh, e.clk.Now()); !v.OK {
		t.Errorf("fresh sign-in link: %+v", v)
	}
	e.mailCmd(fresh + "-" + mail.KindSignin)
	// ... even when the old revocation is re-published once more, to a
	// replica whose ledger knows nothing of it.
	e.stop()
	iss2, _ := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.run(iss2)
	e.publishRaw(events.SubjectClientLinksRevoked, "evt-rv1-third", e.marshal(revocation("evt-rv1", "nia", "lost phone")))
	e.waitIdle()
	if v := e.verdict(scope.Signin("acme", "nia"), fresh, e.clk.Now()); !v.OK {
		t.Errorf("fresh sign-in link after the old revocation came again: %+v", v)
	}

	// A reschedule of the revoked appointment keeps it revoked; its email
	// carries no link.
	e.publish(rescheduled("evt-v8", "ap-v1", tA.Add(120*time.Hour)))
	e.waitIdle()
	apptScope := scope.Appointment("acme", "nia", "ap-v1")
	st, _ = e.scopeState(apptScope)
	if st.Change != scope.ChangeRescheduled || st.RevokedAt == nil {
		t.Errorf("revoked appointment after a reschedule: %+v", st)
	}
	if v := st.Verdict(live[apptScope], e.clk.Now()); v.Reason != events.ReasonRevoked {
		t.Errorf("revoked appointment link after a reschedule: %+v", v)
	}
	if cmd := e.mailFor(mail.KindAppointmentRescheduled, "evt-v8"); cmd.LinkID != "" || cmd.Kid != "" {
		t.Errorf("moved email of a revoked appointment carries a link: %+v", cmd)
	}

	// Without a reason.
	e.publish(revocation("evt-rv2", "oli", ""))
	e.waitIdle()
	if st, _ := e.scopeState(scope.Signin("acme", "oli")); st.RevokedReason != "revoked by the practice" || st.RevokedAt == nil {
		t.Errorf("default reason: %+v", st)
	}
}

func equalCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRevocationAndSigninsHandledOutOfOrder(t *testing.T) {
	e := newEnv(t)
	e.clk.Set(tA)
	e.publish(signin("evt-w1", "pia"))
	e.handleAll(e.fetch(1)...)
	subject := scope.Signin("acme", "pia")
	link1 := e.linkIDOf(events.PurposeSignin, "acme", "evt-w1")

	// A sign-in requested before the revocation, handled after it: born
	// superseded, never mailed.
	e.publish(signin("evt-w2", "pia"))
	e.publish(revocation("evt-wr1", "pia", ""))
	msgs := e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	link2 := e.linkIDOf(events.PurposeSignin, "acme", "evt-w2")
	st, _ := e.scopeState(subject)
	if v := st.Verdict(link1, tA); v.Reason != events.ReasonRevoked {
		t.Errorf("link 1: %+v", v)
	}
	if v := st.Verdict(link2, tA); v.OK {
		t.Errorf("link 2, requested before the revocation, works")
	}
	if _, err := e.mail.Last(e.ctx, bus.MailCommandPrefix+link2+"-signin"); err == nil {
		t.Error("link 2 was mailed")
	}

	// A sign-in requested after a revocation, handled before it: it
	// stays working.
	e.publish(revocation("evt-wr2", "pia", ""))
	e.publish(signin("evt-w3", "pia"))
	msgs = e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	link3 := e.linkIDOf(events.PurposeSignin, "acme", "evt-w3")
	st, _ = e.scopeState(subject)
	if v := st.Verdict(link3, tA); !v.OK {
		t.Errorf("link 3, requested after the revocation: %+v (state %+v)", v, st)
	}
	e.mailCmd(link3 + "-signin")
}

// TestRevocationEndsUsedLinksThatHaveNotExpired reproduces review finding
// F2: a used one-time link kept state "used" after the client's links
// were revoked, so the browser that redeemed it kept getting tickets
// through its session cookie. Revocation must also turn off a used link
// that has not expired yet.
func TestRevocationEndsUsedLinksThatHaveNotExpired(t *testing.T) {
	e := newApptEnv(t)
	e.publish(share("evt-u1", "uma", "sh-u"))
	e.waitIdle()
	subject := scope.Document("acme", "uma", "sh-u")
	st, seq := e.scopeState(subject)
	st.Change, st.UsedAt, st.EventID, st.At = scope.ChangeUsed, tp(tA), "click-u", tA
	if _, err := scope.NewStore(e.js).Update(e.ctx, subject, seq, &st); err != nil {
		t.Fatal(err)
	}
	e.publish(revocation("evt-rvu", "uma", "forwarded"))
	e.waitIdle()
	if v := e.verdict(subject, e.linkIDOf(events.PurposeDocument, "acme", "evt-u1"), e.clk.Now()); v.Reason != events.ReasonRevoked {
		t.Fatalf("used, unexpired link after revocation: %+v, want revoked", v)
	}
}
