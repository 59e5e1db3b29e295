package events

// Stream names of the contract.
const (
	// StreamActions holds what practice systems publish (subjects actions.>).
	StreamActions = "ACTIONS"
	// StreamLinks holds the lifecycle events linkpipe publishes (links.>).
	StreamLinks = "LINKS"
)

// Action subjects, published by practice systems to the ACTIONS stream.
const (
	SubjectSigninRequested        = "actions.signin.requested"
	SubjectDocumentShared         = "actions.document.shared"
	SubjectAppointmentScheduled   = "actions.appointment.scheduled"
	SubjectAppointmentRescheduled = "actions.appointment.rescheduled"
	SubjectAppointmentCanceled    = "actions.appointment.canceled"
	SubjectAppointmentReminder    = "actions.appointment.reminder"
	SubjectClientLinksRevoked     = "actions.client.links_revoked"
	SubjectPracticeUpdated        = "actions.practice.updated"

	// SubjectRenewalRequested is published by linkpipe's own redeemer
	// (not by practice systems): a client asked for a fresh link from a
	// refused one. It names only the link; the issuer resolves it to the
	// link's client and address on record.
	SubjectRenewalRequested = "actions.renewal.requested"

	// SubjectAddressUnsuppressed lifts the suppression of an address (a
	// permanent bounce or a complaint stopped every email to it).
	SubjectAddressUnsuppressed = "actions.address.unsuppressed"

	// SubjectActionsAll is the ACTIONS stream's subject filter.
	SubjectActionsAll = "actions.>"
)

// Lifecycle event types; the last token of links.<link_id>.<type>.
const (
	TypeIssued  = "issued"
	TypeSent    = "sent"
	TypeFailed  = "failed"
	TypeTouched = "touched"
	TypeUsed    = "used"
	TypeExpired = "expired"
	TypeRevoked = "revoked"

	// TypeDelivered: the recipient's mail server accepted the email (SES
	// feedback).
	TypeDelivered = "delivered"
	// TypeBounced: the email bounced; Reason is one of the Bounce*
	// values, Detail the bounce subtype and the diagnostic.
	TypeBounced = "bounced"
	// TypeComplained: the recipient marked the email as spam.
	TypeComplained = "complained"
)

// Reasons of a bounced event (SES's bounceType, lower-cased).
const (
	// BouncePermanent: the address will never accept mail (it is
	// suppressed).
	BouncePermanent = "permanent"
	// BounceTransient: a temporary refusal (mailbox full, message too
	// large, ...).
	BounceTransient = "transient"
	// BounceUndetermined: the provider could not tell.
	BounceUndetermined = "undetermined"
)

// ReasonSuppressedPrefix starts the reason of a failed event for an email
// not sent because its address is suppressed.
const ReasonSuppressedPrefix = "suppressed"

// TouchContinued is the reason of a touched event that records a
// continuation: the browser that redeemed a one-time link opened it again
// while its session was live and went straight to the portal with a new
// ticket. Other touched events carry no reason.
const TouchContinued = "continued"

// SubjectLinksAll is the LINKS stream's subject filter.
const SubjectLinksAll = "links.>"

// LinkSubject returns the subject of a lifecycle event: links.<link_id>.<type>.
func LinkSubject(linkID, typ string) string {
	return "links." + linkID + "." + typ
}

// Refusal reasons carried by an expired event and by a refusal page's
// <meta name="linkpipe-reason">.
const (
	ReasonExpired     = "expired"
	ReasonUsed        = "used"
	ReasonSuperseded  = "superseded"
	ReasonRevoked     = "revoked"
	ReasonCanceled    = "canceled"
	ReasonNotYetValid = "not_yet_valid"
	// ReasonNotFound is the reason on the 404 page of a token that matches no
	// link (malformed, truncated, forged). It is never carried by an event,
	// since there is no link to publish it on.
	ReasonNotFound = "not_found"
)

// Purposes of a link; the ticket's "purpose" claim.
const (
	PurposeSignin     = "signin"
	PurposeDocument   = "document"
	PurposeTelehealth = "telehealth"
)
