package scope

import (
	"errors"
	"fmt"
	"strings"

	"github.com/linkpipe/linkpipe/events"
)

// Subjects of the SCOPES stream.
const (
	// Prefix starts every scope subject.
	Prefix = "scope."
	// All is the SCOPES stream's subject filter (bus.ScopeSubjects).
	All = Prefix + ">"
)

// Kinds of scope: the fourth token of a scope subject.
const (
	KindSignin      = "signin"
	KindDocument    = "doc"
	KindAppointment = "appt"
	// KindRevocation is a client's revocation record (Revocation): no
	// link, only the newest revocation of the client's links.
	KindRevocation = "revocation"
)

// ErrBadSubject: a subject that is not a scope subject.
var ErrBadSubject = errors.New("scope: not a scope subject")

// Signin is the scope of a client's sign-in links.
func Signin(practice, client string) string {
	return Prefix + practice + "." + client + "." + KindSignin
}

// Document is the scope of one document share.
func Document(practice, client, share string) string {
	return Prefix + practice + "." + client + "." + KindDocument + "." + share
}

// Appointment is the scope of one appointment (its telehealth link, if
// any).
func Appointment(practice, client, appointment string) string {
	return Prefix + practice + "." + client + "." + KindAppointment + "." + appointment
}

// Revocation is the subject of a client's revocation record: its last
// state (Change revoked, no link) is the client's newest revocation, with
// its ACTIONS sequence in ActionSeq. A link minted by an action with a
// lower sequence is born revoked, whether or not its scope existed when
// the revocation was handled.
func Revocation(practice, client string) string {
	return Prefix + practice + "." + client + "." + KindRevocation
}

// ClientFilter matches every scope of a client (and its revocation
// record).
func ClientFilter(practice, client string) string {
	return Prefix + practice + "." + client + ".>"
}

// AppointmentFilter matches the scope of an appointment whatever its
// client (later appointment actions name only the appointment).
func AppointmentFilter(practice, appointment string) string {
	return Prefix + practice + ".*." + KindAppointment + "." + appointment
}

// OfLink returns the scope subject of an issued link event.
func OfLink(ev *events.LinkEvent) string {
	switch ev.Purpose {
	case events.PurposeDocument:
		return Document(ev.PracticeID, ev.ClientID, ev.ShareID)
	case events.PurposeTelehealth:
		return Appointment(ev.PracticeID, ev.ClientID, ev.AppointmentID)
	default:
		return Signin(ev.PracticeID, ev.ClientID)
	}
}

// Subject is a parsed scope subject.
type Subject struct {
	Practice string
	Client   string
	// Kind is KindSignin, KindDocument, KindAppointment or
	// KindRevocation.
	Kind string
	// ID is the share or appointment id; empty for a sign-in scope and a
	// revocation record.
	ID string
}

// String returns the subject.
func (s Subject) String() string {
	switch s.Kind {
	case KindSignin:
		return Signin(s.Practice, s.Client)
	case KindRevocation:
		return Revocation(s.Practice, s.Client)
	}
	return Prefix + s.Practice + "." + s.Client + "." + s.Kind + "." + s.ID
}

// Parse reads a scope subject; ErrBadSubject (wrapped) if it is not one.
func Parse(subject string) (Subject, error) {
	rest, ok := strings.CutPrefix(subject, Prefix)
	if !ok {
		return Subject{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	parts := strings.Split(rest, ".")
	var s Subject
	switch {
	case len(parts) == 3 && (parts[2] == KindSignin || parts[2] == KindRevocation):
		s = Subject{Practice: parts[0], Client: parts[1], Kind: parts[2]}
	case len(parts) == 4 && (parts[2] == KindDocument || parts[2] == KindAppointment):
		s = Subject{Practice: parts[0], Client: parts[1], Kind: parts[2], ID: parts[3]}
	default:
		return Subject{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	if s.Practice == "" || s.Client == "" || (s.Kind != KindSignin && s.Kind != KindRevocation && s.ID == "") {
		return Subject{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	return s, nil
}
