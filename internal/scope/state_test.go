package scope_test

import (
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/scope"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	base := scope.State{LinkID: "L1", OneTime: true, ValidFrom: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)}
	with := func(f func(*scope.State)) *scope.State { s := base; f(&s); return &s }
	cases := []struct {
		name string
		st   *scope.State
		now  time.Time
		want string
	}{
		{"valid", &base, now, ""},
		{"no state", nil, now, events.ReasonNotFound},
		{"superseded", with(func(s *scope.State) { s.LinkID = "L2" }), now, events.ReasonSuperseded},
		{"superseded wins over expiry", with(func(s *scope.State) { s.LinkID = "L2" }), now.Add(2 * time.Hour), events.ReasonSuperseded},
		{"used", with(func(s *scope.State) { s.UsedAt = at(0) }), now, events.ReasonUsed},
		{"multi-use ignores use", with(func(s *scope.State) { s.UsedAt = at(0); s.OneTime = false }), now, ""},
		{"revoked", with(func(s *scope.State) { s.RevokedAt = at(0) }), now, events.ReasonRevoked},
		{"canceled", with(func(s *scope.State) { s.CanceledAt = at(0) }), now, events.ReasonCanceled},
		{"not yet valid", &base, now.Add(-2 * time.Hour), events.ReasonNotYetValid},
		{"expired at the instant", &base, now.Add(time.Hour), events.ReasonExpired},
		{"last valid instant", &base, now.Add(time.Hour - time.Nanosecond), ""},
	}
	for _, c := range cases {
		v := c.st.Verdict("L1", c.now)
		if v.Reason != c.want || v.OK != (c.want == "") {
			t.Errorf("%s: got %+v, want %q", c.name, v, c.want)
		}
		if c.want != "" && scope.Explain(c.want) == scope.Explain("nonsense") {
			t.Errorf("%s: no plain-words explanation", c.want)
		}
	}
}

func TestScopeSubjects(t *testing.T) {
	if got := scope.OfLink(&events.LinkEvent{Purpose: events.PurposeDocument, PracticeID: "p", ClientID: "c", ShareID: "s"}); got != "scope.p.c.doc.s" {
		t.Fatal(got)
	}
	if got := scope.OfLink(&events.LinkEvent{Purpose: events.PurposeTelehealth, PracticeID: "p", ClientID: "c", AppointmentID: "a"}); got != "scope.p.c.appt.a" {
		t.Fatal(got)
	}
	if scope.ClientFilter("p", "c") != "scope.p.c.>" || scope.Signin("p", "c") != "scope.p.c.signin" {
		t.Fatal("scope layout changed")
	}
}
