package scope_test

import (
	"errors"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/scope"
)

func TestSubjectsRoundTrip(t *testing.T) {
	for _, subj := range []string{
		scope.Signin("p1", "c1"),
		scope.Document("p1", "c1", "s-9"),
		scope.Appointment("p1", "c_2", "a-1"),
		scope.Revocation("p1", "c1"),
	} {
		s, err := scope.Parse(subj)
		if err != nil {
			t.Fatalf("Parse(%q): %v", subj, err)
		}
		if s.String() != subj || s.Practice != "p1" {
			t.Fatalf("Parse(%q) = %+v, String %q", subj, s, s.String())
		}
	}
	s, _ := scope.Parse(scope.Appointment("p", "c", "a"))
	if s.Client != "c" || s.Kind != scope.KindAppointment || s.ID != "a" {
		t.Fatalf("appointment parse: %+v", s)
	}
}

func TestParseRefusesOtherSubjects(t *testing.T) {
	for _, subj := range []string{"", "scope.", "scope.p", "scope.p.c", "scope.p.c.signin.x", "scope.p.c.doc",
		"scope.p.c.appt.", "scope.p..signin", "links.x.issued", "scope.p.c.other.x", "scope.p.c.doc.a.b", "scope.p.c.revocation.x"} {
		if _, err := scope.Parse(subj); !errors.Is(err, scope.ErrBadSubject) {
			t.Errorf("Parse(%q): %v, want ErrBadSubject", subj, err)
		}
	}
}

func TestOfLinkAndFilters(t *testing.T) {
	ev := &events.LinkEvent{PracticeID: "p", ClientID: "c", Purpose: events.PurposeDocument, ShareID: "s"}
	if got := scope.OfLink(ev); got != scope.Document("p", "c", "s") {
		t.Fatalf("OfLink document: %s", got)
	}
	ev = &events.LinkEvent{PracticeID: "p", ClientID: "c", Purpose: events.PurposeTelehealth, AppointmentID: "a"}
	if got := scope.OfLink(ev); got != scope.Appointment("p", "c", "a") {
		t.Fatalf("OfLink telehealth: %s", got)
	}
	ev = &events.LinkEvent{PracticeID: "p", ClientID: "c", Purpose: events.PurposeSignin}
	if got := scope.OfLink(ev); got != scope.Signin("p", "c") {
		t.Fatalf("OfLink signin: %s", got)
	}
	if scope.All != bus.ScopeSubjects {
		t.Fatalf("scope.All %q is not the SCOPES filter %q", scope.All, bus.ScopeSubjects)
	}
	if scope.ClientFilter("p", "c") != "scope.p.c.>" || scope.AppointmentFilter("p", "a") != "scope.p.*.appt.a" {
		t.Fatal("filters changed")
	}
}
