package events

import "time"

// Envelope is what every action carries.
type Envelope struct {
	// EventID is the idempotency key, also sent as Nats-Msg-Id.
	EventID string `json:"event_id"`
	// PracticeID names the practice the action belongs to.
	PracticeID string `json:"practice_id"`
	// Version is the wire format version; 0 (absent) and 1 mean this one.
	Version int `json:"version,omitempty"`
}

// Envelope returns the action's common fields.
func (e *Envelope) envelope() *Envelope { return e }

// Action is one of the action types below.
type Action interface {
	// Subject is where the action is published.
	Subject() string
	// Validate reports the first problem with the action as a *FieldError.
	Validate() error
	envelope() *Envelope
}

// EnvelopeOf returns the event id, practice id and version every action has.
func EnvelopeOf(a Action) Envelope { return *a.envelope() }

// Client is the person a link is for.
type Client struct {
	ID    string `json:"id"`
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
	// Locale is the client's language (BCP 47, "es", "es-MX"); their emails
	// are in it when linkpipe speaks it, else in the practice's.
	Locale string `json:"locale,omitempty"`
}

// Document is a document shared with a client.
type Document struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

// Appointment describes an appointment. Which fields are required depends on
// the action: scheduled needs all but clinician_name; rescheduled needs id,
// starts_at and ends_at; canceled and reminder need only id.
type Appointment struct {
	ID            string     `json:"id"`
	StartsAt      *time.Time `json:"starts_at,omitempty"`
	EndsAt        *time.Time `json:"ends_at,omitempty"`
	Telehealth    bool       `json:"telehealth,omitempty"`
	ClinicianName string     `json:"clinician_name,omitempty"`
	Timezone      string     `json:"timezone,omitempty"`
}

// SigninRequested asks for a one-time sign-in link; it supersedes the
// client's older sign-in links.
type SigninRequested struct {
	Envelope
	Client Client `json:"client"`
	// ReturnTo is a portal path (relative, starting with "/") to land on.
	ReturnTo string `json:"return_to,omitempty"`
}

// DocumentShared asks for a one-time link to a document.
type DocumentShared struct {
	Envelope
	Client   Client   `json:"client"`
	Document Document `json:"document"`
	ShareID  string   `json:"share_id"`
}

// AppointmentScheduled asks for a confirmation email; a telehealth
// appointment's link is valid until ends_at plus the practice's grace.
type AppointmentScheduled struct {
	Envelope
	Client      Client      `json:"client"`
	Appointment Appointment `json:"appointment"`
	// Reminders are offsets before starts_at, as Go durations ("72h");
	// nil means the practice's default (72h and 24h), empty means none
	// (omitzero, not omitempty: an empty list is sent as []).
	Reminders []string `json:"reminders,omitzero"`
}

// AppointmentRescheduled moves an appointment: same link, new window.
type AppointmentRescheduled struct {
	Envelope
	Appointment Appointment `json:"appointment"`
}

// AppointmentCanceled revokes an appointment's link and drops its reminders.
type AppointmentCanceled struct {
	Envelope
	Appointment Appointment `json:"appointment"`
}

// AppointmentReminder asks for a reminder email carrying the appointment's
// current link.
type AppointmentReminder struct {
	Envelope
	Appointment Appointment `json:"appointment"`
}

// ClientLinksRevoked makes every live link of a client stop working.
type ClientLinksRevoked struct {
	Envelope
	Client Client `json:"client"`
	Reason string `json:"reason,omitempty"`
}

// RenewalRequested asks for a way back in for the client of a link whose
// click was refused ("Email me a new link"): published by the redeemer,
// handled by the issuer, which mails the link's client at the address on
// record (a fresh sign-in link, or a telehealth appointment's current
// link). It carries no address: whoever can publish it can only make a
// link's own client get an email.
type RenewalRequested struct {
	Envelope
	LinkID string `json:"link_id"`
}

// AddressUnsuppressed lifts the suppression of an address: after a
// permanent bounce or a complaint linkpipe sends nothing more to it until
// this action names it (the client fixed the mailbox, or asked again).
// Suppression is deployment-wide (a mailbox that does not exist does not
// exist for any practice), so this lifts it for every practice.
type AddressUnsuppressed struct {
	Envelope
	Email string `json:"email"`
}

// Practice is a practice's settings.
type Practice struct {
	Name      string `json:"name"`
	ReplyTo   string `json:"reply_to"`
	PortalURL string `json:"portal_url"`
	// Timezone (IANA, "America/Chicago") is the zone expiry times in
	// sign-in and document emails are written in; UTC when empty.
	Timezone string `json:"timezone,omitempty"`
	// Locale (BCP 47) is the default language of the practice's emails and
	// pages; English when empty or not spoken.
	Locale string `json:"locale,omitempty"`
	// LogoURL (https only) is shown at the top of emails and pages.
	LogoURL string `json:"logo_url,omitempty"`
	// AccentColor ("#rrggbb") colours buttons; a colour too light for white
	// text is darkened until it meets WCAG AA.
	AccentColor string `json:"accent_color,omitempty"`
}

// Policy overrides link rules for one practice, within the bounds of
// [PolicyBounds]. Durations are Go duration strings ("24h", "90m").
type Policy struct {
	SigninTTL       string   `json:"signin_ttl,omitempty"`
	DocumentTTL     string   `json:"document_ttl,omitempty"`
	TelehealthGrace string   `json:"telehealth_grace,omitempty"`
	Reminders       []string `json:"reminders,omitzero"`
}

// PracticeUpdated stores a practice's settings; the newest wins.
type PracticeUpdated struct {
	Envelope
	Practice Practice `json:"practice"`
	Policy   *Policy  `json:"policy,omitempty"`
}

func (*SigninRequested) Subject() string        { return SubjectSigninRequested }
func (*DocumentShared) Subject() string         { return SubjectDocumentShared }
func (*AppointmentScheduled) Subject() string   { return SubjectAppointmentScheduled }
func (*AppointmentRescheduled) Subject() string { return SubjectAppointmentRescheduled }
func (*AppointmentCanceled) Subject() string    { return SubjectAppointmentCanceled }
func (*AppointmentReminder) Subject() string    { return SubjectAppointmentReminder }
func (*ClientLinksRevoked) Subject() string     { return SubjectClientLinksRevoked }
func (*PracticeUpdated) Subject() string        { return SubjectPracticeUpdated }
func (*RenewalRequested) Subject() string       { return SubjectRenewalRequested }
func (*AddressUnsuppressed) Subject() string    { return SubjectAddressUnsuppressed }

// newAction returns an empty action for a subject, or nil for an unknown one.
func newAction(subject string) Action {
	switch subject {
	case SubjectSigninRequested:
		return &SigninRequested{}
	case SubjectDocumentShared:
		return &DocumentShared{}
	case SubjectAppointmentScheduled:
		return &AppointmentScheduled{}
	case SubjectAppointmentRescheduled:
		return &AppointmentRescheduled{}
	case SubjectAppointmentCanceled:
		return &AppointmentCanceled{}
	case SubjectAppointmentReminder:
		return &AppointmentReminder{}
	case SubjectClientLinksRevoked:
		return &ClientLinksRevoked{}
	case SubjectPracticeUpdated:
		return &PracticeUpdated{}
	case SubjectRenewalRequested:
		return &RenewalRequested{}
	case SubjectAddressUnsuppressed:
		return &AddressUnsuppressed{}
	}
	return nil
}
