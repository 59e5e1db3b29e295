// Package mail owns what an email is in linkpipe: the mail command, the
// message that asks a mailer to send one email; its mail id; queuing it on
// MAIL as mail.cmd.<mail_id> ([Queue], which the issuer and, for renewals,
// the redeemer call); the rendering of a command into a Message (plain text and HTML, subject,
// Reply-To, anti-threading headers); and the sentinel errors by which a
// sender says whether a failure is worth retrying. A command never carries
// a bearer token: it names the action the link was minted from, and the
// mailer re-derives the token with the link key.
package mail

import (
	"time"

	"github.com/linkpipe/linkpipe/events"
)

// Kinds of email.
const (
	KindSignin                 = "signin"
	KindDocument               = "document"
	KindAppointmentConfirmed   = "appointment_confirmed"
	KindAppointmentReminder    = "appointment_reminder"
	KindAppointmentRescheduled = "appointment_rescheduled"
	KindAppointmentCanceled    = "appointment_canceled"
)

// Command asks for one email.
type Command struct {
	// MailID is unique per email and the subject suffix of the command; a
	// mail id is sent at most once.
	MailID string `json:"mail_id"`
	Kind   string `json:"kind"`

	PracticeID string        `json:"practice_id"`
	To         events.Client `json:"to"`

	// LinkID names the link the email carries; empty for an email without
	// a link (an in-person appointment's confirmation).
	LinkID string `json:"link_id,omitempty"`
	// Kid, Purpose, Scope and MintEventID re-derive the link's token
	// (link.Keyring.Mint(Kid, Purpose, Scope, MintEventID)); Scope is the
	// link's scope subject.
	Kid         string `json:"kid,omitempty"`
	Purpose     string `json:"purpose,omitempty"`
	Scope       string `json:"scope,omitempty"`
	MintEventID string `json:"mint_event_id,omitempty"`

	ValidFrom time.Time `json:"valid_from,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`

	Document    *events.Document    `json:"document,omitempty"`
	Appointment *events.Appointment `json:"appointment,omitempty"`

	// CauseEventID is the action that asked for this email.
	CauseEventID string    `json:"cause_event_id"`
	At           time.Time `json:"at"`
	// ActionAt is when that action reached ACTIONS (JetStream's
	// timestamp): the mailer's action-to-sent histogram starts there.
	// Absent on commands queued before it existed.
	ActionAt time.Time `json:"action_at,omitzero"`
}
