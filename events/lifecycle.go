package events

import "time"

// LinkEvent is a lifecycle event on links.<link_id>.<type>. Fields that do
// not apply to a type are omitted.
type LinkEvent struct {
	// EventID identifies this event (also its Nats-Msg-Id).
	EventID string `json:"event_id"`
	// Type is one of the Type* constants; it is also the subject's last token.
	Type       string    `json:"type"`
	LinkID     string    `json:"link_id"`
	PracticeID string    `json:"practice_id"`
	ClientID   string    `json:"client_id"`
	Purpose    string    `json:"purpose"`
	At         time.Time `json:"at"`

	// CauseEventID is the action that caused this event (issued, revoked).
	CauseEventID string `json:"cause_event_id,omitempty"`
	// Reason: for expired, one of the Reason* codes; for failed, the
	// mail error (starting with ReasonSuppressedPrefix when the address is
	// suppressed); for bounced, one of the Bounce* values; for revoked, why; for touched, TouchContinued when it
	// records a continuation (else empty).
	Reason string `json:"reason,omitempty"`
	// Permanent tells, on a failed event, that retrying will not help.
	Permanent bool `json:"permanent,omitempty"`
	// Detail, on bounced, is the bounce subtype and the receiving
	// server's diagnostic ("NoEmail: smtp; 550 5.1.1 user unknown"), and
	// on complained the complaint's feedback type; scrubbed of addresses.
	Detail string `json:"detail,omitempty"`

	// Link details, on issued. A lifecycle event names the client by id
	// only: no address or name is ever published on LINKS (which is never
	// purged); the address on record lives in linkpipe's recipient bucket.
	DocumentID    string     `json:"document_id,omitempty"`
	ShareID       string     `json:"share_id,omitempty"`
	AppointmentID string     `json:"appointment_id,omitempty"`
	ReturnTo      string     `json:"return_to,omitempty"`
	ValidFrom     *time.Time `json:"valid_from,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	// Supersedes is the link this one replaced in its scope (issued).
	Supersedes string `json:"supersedes,omitempty"`

	// Mail details, on sent and failed, and on delivered, bounced and
	// complained (MessageID is then the provider's id of the email).
	MailID    string `json:"mail_id,omitempty"`
	MailKind  string `json:"mail_kind,omitempty"`
	MessageID string `json:"message_id,omitempty"`

	// Click details, on touched, used and expired.
	UserAgent string `json:"user_agent,omitempty"`
	// Scanner is true when a touch looked like an email security scanner.
	Scanner bool `json:"scanner,omitempty"`
}

// Subject is where the event is published.
func (e *LinkEvent) Subject() string { return LinkSubject(e.LinkID, e.Type) }
