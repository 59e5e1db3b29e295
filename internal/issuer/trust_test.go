package issuer_test

import (
	"strconv"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

// TestReusedEventIDNeverBindsAnotherClient reproduces trust finding 1: a
// sign-in for client A with event E is issued; then an issuer replica with
// an empty data dir (or any replica after the de-duplication window) gets
// a sign-in for client B that reuses E. Before the fix it re-minted A's
// token, wrote it as current in B's scope and published a second issued
// record, so A's link signed in B. Now the second action is dead-lettered
// on every replica, B's scope stays empty, and A's link keeps exactly one
// issued record, A's.
func TestReusedEventIDNeverBindsAnotherClient(t *testing.T) {
	e := newEnv(t)
	e.start()
	seqA := e.publish(signin("evt-shared", "alice"))
	e.waitIdle()
	linkA := e.linkIDOf(events.PurposeSignin, "acme", "evt-shared")
	if got := e.issued(linkA); got.ClientID != "alice" {
		t.Fatalf("A's link issued for %q", got.ClientID)
	}

	// A second replica with an empty ledger, then B's action reusing E
	// (another Nats-Msg-Id: the dedupe window is over).
	e.stop()
	fresh, _ := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.stop = e.run(fresh)
	b := signin("evt-shared", "bob")
	seqB := e.publishRaw(events.SubjectSigninRequested, "evt-shared-later", e.marshal(b))
	e.waitIdle()

	if _, n := e.count(e.links, events.LinkSubject(linkA, events.TypeIssued)); n != 1 {
		t.Errorf("A's link has %d issued records, want 1", n)
	}
	if got := e.issued(linkA); got.ClientID != "alice" {
		t.Errorf("A's link now issued for %q", got.ClientID)
	}
	if subs, _ := e.count(e.scopesR, scope.Signin("acme", "bob")); subs != 0 {
		st, _ := e.scopeState(scope.Signin("acme", "bob"))
		t.Errorf("bob got a sign-in scope from A's event id: %+v", st)
	}
	dl := e.deadLetters()
	if reason := dl[strconv.FormatUint(seqB, 10)]; reason == "" {
		t.Errorf("B's action was not dead-lettered; dead letters: %v", dl)
	} else if _, ok := dl[strconv.FormatUint(seqA, 10)]; ok {
		t.Errorf("A's action was dead-lettered: %v", dl)
	}
	if n := e.mailCount(); n != 1 {
		t.Errorf("%d mail commands, want A's only", n)
	}
}
