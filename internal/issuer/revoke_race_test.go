package issuer_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

// verdictOf is the redeemer's verdict on linkID: its scope's state now, or
// "not found" when the scope has none.
func (e *env) verdictOf(subject, linkID string, now time.Time) scope.Verdict {
	e.t.Helper()
	var st scope.State
	_, err := e.scopesR.LastJSON(e.ctx, subject, &st)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return (*scope.State)(nil).Verdict(linkID, now)
	case err != nil:
		e.t.Fatalf("scope %s: %v", subject, err)
	}
	return st.Verdict(linkID, now)
}

// mailed reports whether a mail command with mailID is queued.
func (e *env) mailed(mailID string) bool {
	e.t.Helper()
	_, err := e.mail.Last(e.ctx, bus.MailCommandPrefix+mailID)
	return err == nil
}

// freshClientLinks are the links a fresh client's sign-in (evt-<c>-s),
// share (evt-<c>-d) and telehealth appointment (evt-<c>-a) mint, by scope.
func (e *env) freshClientLinks(c string) map[string]string {
	return map[string]string{
		scope.Signin("acme", c):              e.linkIDOf(events.PurposeSignin, "acme", "evt-"+c+"-s"),
		scope.Document("acme", c, "sh-"+c):   e.linkIDOf(events.PurposeDocument, "acme", "evt-"+c+"-d"),
		scope.Appointment("acme", c, "a-"+c): e.linkIDOf(events.PurposeTelehealth, "acme", "evt-"+c+"-a"),
	}
}

func (e *env) publishFreshClient(c string) (revSeq uint64) {
	e.publish(signin("evt-"+c+"-s", c))
	e.publish(share("evt-"+c+"-d", c, "sh-"+c))
	e.publish(scheduled("evt-"+c+"-a", c, "a-"+c, tA.Add(96*time.Hour), true, nil))
	return e.publish(revocation("evt-"+c+"-r", c, "lost phone"))
}

// wantRevoked checks that every link of a fresh client whose actions came
// before its revocation is refused as revoked.
func (e *env) wantRevoked(c string) {
	e.t.Helper()
	now := e.clk.Now()
	for subject, linkID := range e.freshClientLinks(c) {
		if v := e.verdictOf(subject, linkID, now); v.OK || v.Reason != events.ReasonRevoked {
			e.t.Errorf("client %s: %s: link requested before the revocation: %+v, want revoked", c, subject, v)
		}
	}
}

// wantNotMailed checks that none of a fresh client's links was mailed (the
// revocation was handled before the actions before it).
func (e *env) wantNotMailed(c string) {
	e.t.Helper()
	links := e.freshClientLinks(c)
	for _, id := range []string{
		links[scope.Signin("acme", c)] + "-" + mail.KindSignin,
		links[scope.Document("acme", c, "sh-"+c)] + "-" + mail.KindDocument,
		links[scope.Appointment("acme", c, "a-"+c)] + "-" + mail.KindAppointmentConfirmed,
	} {
		if e.mailed(id) {
			e.t.Errorf("client %s: %s was mailed", c, id)
		}
	}
}

// TestRevocationRightAfterAFreshClientsActions reproduces the finding "a
// revocation handled before the sign-in published just before it leaves
// the link working": for fresh clients (no scope yet), a sign-in, a
// document share and a telehealth appointment, then a revocation, published
// back to back to an issuer handling actions in parallel. Every link must
// be refused as revoked, whatever order the issuer handled them in (a link
// may have been mailed: handled in order, it is mailed, then revoked).
func TestRevocationRightAfterAFreshClientsActions(t *testing.T) {
	e := newApptEnv(t)
	// Two replicas, each handling actions in parallel.
	iss2, _ := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.run(iss2)
	const clients = 40
	for n := range clients {
		e.publishFreshClient(fmt.Sprintf("fc%02d", n))
	}
	e.waitIdle()
	for n := range clients {
		e.wantRevoked(fmt.Sprintf("fc%02d", n))
	}
	if t.Failed() {
		return
	}
	// A sign-in requested after the revocation works and is mailed.
	e.publish(signin("evt-fc00-s2", "fc00"))
	e.waitIdle()
	fresh := e.linkIDOf(events.PurposeSignin, "acme", "evt-fc00-s2")
	if v := e.verdictOf(scope.Signin("acme", "fc00"), fresh, e.clk.Now()); !v.OK {
		t.Errorf("sign-in after the revocation: %+v", v)
	}
	e.mailCmd(fresh + "-" + mail.KindSignin)
}

// TestRevocationHandledBeforeTheFreshClientsActionsBeforeIt is the same
// finding in its deterministic form: the revocation is handled first, then,
// by another replica, the sign-in, share and appointment published before
// it. Then: a sign-in
// requested after the revocation works; the old sign-in re-published (same
// event id, a later ACTIONS sequence), to a replica with an empty ledger,
// does not bring its link back.
func TestRevocationHandledBeforeTheFreshClientsActionsBeforeIt(t *testing.T) {
	e := newEnv(t)
	e.clk.Set(tA)
	e.publishFreshClient("fr")
	msgs := e.fetch(4)
	e.handleAll(msgs[3])
	// The rest on another replica (or this one restarted with an empty
	// data dir): what it needs is on JetStream.
	e.iss, _ = e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.handleAll(msgs[2], msgs[1], msgs[0])
	e.wantRevoked("fr")
	e.wantNotMailed("fr")
	// The appointment stands: its confirmation goes, without a link.
	if cmd := e.mailFor(mail.KindAppointmentConfirmed, "evt-fr-a"); cmd.LinkID != "" || cmd.Kid != "" {
		t.Errorf("confirmation of an appointment born revoked carries a link: %+v", cmd)
	}

	// The reverse order: a revocation, then a sign-in (higher sequence).
	e.publish(signin("evt-fr-s2", "fr"))
	e.handleAll(e.fetch(1)...)
	fresh := e.linkIDOf(events.PurposeSignin, "acme", "evt-fr-s2")
	if v := e.verdictOf(scope.Signin("acme", "fr"), fresh, e.clk.Now()); !v.OK {
		t.Errorf("sign-in after the revocation: %+v", v)
	}
	e.mailCmd(fresh + "-" + mail.KindSignin)

	// The old sign-in and share re-published after the revocation, to
	// another replica: the old links stay refused, nothing is mailed, the
	// fresh link keeps working.
	iss2, _ := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.iss = iss2
	e.publishRaw(events.SubjectSigninRequested, "evt-fr-s-again", e.marshal(signin("evt-fr-s", "fr")))
	e.publishRaw(events.SubjectDocumentShared, "evt-fr-d-again", e.marshal(share("evt-fr-d", "fr", "sh-fr")))
	e.handleAll(e.fetch(2)...)
	links := e.freshClientLinks("fr")
	now := e.clk.Now()
	if v := e.verdictOf(scope.Signin("acme", "fr"), links[scope.Signin("acme", "fr")], now); v.OK {
		t.Errorf("re-published old sign-in: its link works: %+v", v)
	}
	if v := e.verdictOf(scope.Document("acme", "fr", "sh-fr"), links[scope.Document("acme", "fr", "sh-fr")], now); v.OK {
		t.Errorf("re-published old share: its link works: %+v", v)
	}
	if v := e.verdictOf(scope.Signin("acme", "fr"), fresh, now); !v.OK {
		t.Errorf("fresh sign-in after the re-publish: %+v", v)
	}
	for _, id := range []string{
		links[scope.Signin("acme", "fr")] + "-" + mail.KindSignin,
		links[scope.Document("acme", "fr", "sh-fr")] + "-" + mail.KindDocument,
	} {
		if e.mailed(id) {
			t.Errorf("re-published old action: %s was mailed", id)
		}
	}
}

// TestRevocationHandledBeforeAnOlderSigninOnASkippedScope: the scope
// exists but the revocation leaves it alone (its link was used and has
// expired), so it does not move the scope's action_seq; a sign-in
// requested before the revocation and handled after it is still refused.
func TestRevocationHandledBeforeAnOlderSigninOnASkippedScope(t *testing.T) {
	e := newEnv(t)
	e.clk.Set(tA)
	e.publish(signin("evt-ux-0", "ux"))
	e.handleAll(e.fetch(1)...)
	subject := scope.Signin("acme", "ux")
	st, seq := e.scopeState(subject)
	st.Change, st.UsedAt, st.EventID, st.At = scope.ChangeUsed, tp(tA), "click-ux", tA
	if _, err := scope.NewStore(e.js).Update(e.ctx, subject, seq, &st); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(72 * time.Hour) // the used link has expired
	e.publish(signin("evt-ux-1", "ux"))
	e.publish(revocation("evt-ux-r", "ux", ""))
	msgs := e.fetch(2)
	e.handleAll(msgs[1], msgs[0])
	link1 := e.linkIDOf(events.PurposeSignin, "acme", "evt-ux-1")
	if v := e.verdictOf(subject, link1, e.clk.Now()); v.Reason != events.ReasonRevoked {
		t.Errorf("sign-in requested before the revocation: %+v, want revoked", v)
	}
	if e.mailed(link1 + "-" + mail.KindSignin) {
		t.Error("it was mailed")
	}
}

// TestRevocationRightAfterAFreshClientsActionsOnR3 is the finding on a
// 3-node cluster with R3 streams and three issuer replicas, one per node:
// the record and the leader reads hold across replicas whose direct gets
// may lag.
func TestRevocationRightAfterAFreshClientsActionsOnR3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	e := newEnv(t) // its single server stays up, unused
	e.clk.Set(tA)
	c := bustest.StartCluster(t, 3)
	_, e.js = c.ConnectTo(t, 0)
	e.scopesR, e.links, e.mail = bus.NewReader(e.js, bus.StreamScopes), bus.NewReader(e.js, bus.StreamLinks), bus.NewReader(e.js, bus.StreamMail)
	for n := range c.URLs {
		_, js := c.ConnectTo(t, n)
		dir, err := practice.Open(e.ctx, js, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dir.Close() })
		iss, err := issuer.New(issuer.Config{
			JS: js, DB: storetest.MustOpen(t, "issuer", issuer.Buckets()...), Keys: e.keys, Practices: dir,
			Clock: e.clk, Metrics: prometheus.NewRegistry(), Concurrency: 8,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.run(iss)
	}
	const clients = 20
	for n := range clients {
		e.publishFreshClient(fmt.Sprintf("r3c%02d", n))
	}
	e.waitIdle()
	notRevoked := func() []string {
		var out []string
		for n := range clients {
			cl := fmt.Sprintf("r3c%02d", n)
			for subject, linkID := range e.freshClientLinks(cl) {
				if v := e.verdictOf(subject, linkID, e.clk.Now()); v.Reason != events.ReasonRevoked {
					out = append(out, fmt.Sprintf("%s: %+v", subject, v))
				}
			}
		}
		return out
	}
	var last []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last seen not revoked:\n%s", strings.Join(last, "\n"))
		}
	})
	eventually.True(t, 15*time.Second, func() bool {
		last = notRevoked()
		return len(last) == 0
	}, "every link requested before its client's revocation revoked")
}
