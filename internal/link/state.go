package link

import (
	"time"

	"github.com/linkpipe/linkpipe/events"
)

// Policy is the set of link rules in force for one practice.
type Policy struct {
	SigninTTL       time.Duration
	DocumentTTL     time.Duration
	TelehealthGrace time.Duration
	// Reminders are the default offsets before an appointment's start.
	Reminders []time.Duration
}

// DefaultPolicy returns DESIGN.md's defaults.
func DefaultPolicy() Policy {
	return Policy{
		SigninTTL:       24 * time.Hour,
		DocumentTTL:     72 * time.Hour,
		TelehealthGrace: 30 * time.Minute,
		Reminders:       []time.Duration{72 * time.Hour, 24 * time.Hour},
	}
}

// PolicyFrom overlays a practice's overrides on the defaults. Values are
// validated by events.PracticeUpdated.Validate; an invalid one here (which
// only a hand-edited bucket could hold) keeps the default.
func PolicyFrom(p *events.Policy) Policy {
	pol := DefaultPolicy()
	if p == nil {
		return pol
	}
	if d, err := events.ParseDurationBounded("", p.SigninTTL, events.MinSigninTTL, events.MaxSigninTTL); err == nil {
		pol.SigninTTL = d
	}
	if d, err := events.ParseDurationBounded("", p.DocumentTTL, events.MinDocumentTTL, events.MaxDocumentTTL); err == nil {
		pol.DocumentTTL = d
	}
	if d, err := events.ParseDurationBounded("", p.TelehealthGrace, events.MinTelehealthGrace, events.MaxTelehealthGrace); err == nil {
		pol.TelehealthGrace = d
	}
	if p.Reminders != nil {
		if r, err := events.ParseReminders("", p.Reminders); err == nil {
			pol.Reminders = r
		}
	}
	return pol
}

// Scope subjects live in the SCOPES stream. The client id is part of every
// scope subject so that all scopes of a client can be listed (revocation).
const (
	ScopePrefix = "scope."
	// ScopeAll is the SCOPES stream's subject filter.
	ScopeAll = "scope.>"
)

// SigninScope is the scope of a client's sign-in links.
func SigninScope(practice, client string) string {
	return ScopePrefix + practice + "." + client + ".signin"
}

// DocumentScope is the scope of one document share.
func DocumentScope(practice, client, share string) string {
	return ScopePrefix + practice + "." + client + ".doc." + share
}

// AppointmentScope is the scope of one appointment's telehealth link.
func AppointmentScope(practice, client, appointment string) string {
	return ScopePrefix + practice + "." + client + ".appt." + appointment
}

// ClientScopes is the filter matching every scope of a client.
func ClientScopes(practice, client string) string {
	return ScopePrefix + practice + "." + client + ".>"
}

// ScopeOf returns the scope subject of an issued link event.
func ScopeOf(ev *events.LinkEvent) string {
	switch ev.Purpose {
	case events.PurposeDocument:
		return DocumentScope(ev.PracticeID, ev.ClientID, ev.ShareID)
	case events.PurposeTelehealth:
		return AppointmentScope(ev.PracticeID, ev.ClientID, ev.AppointmentID)
	default:
		return SigninScope(ev.PracticeID, ev.ClientID)
	}
}

// Changes recorded in State.Change.
const (
	ChangeIssued      = "issued"
	ChangeUsed        = "used"
	ChangeRevoked     = "revoked"
	ChangeRescheduled = "rescheduled"
	ChangeCanceled    = "canceled"
)

// State is a scope's state: the last message on its subject.
type State struct {
	// Change is what the message that wrote this state did.
	Change string `json:"change"`
	// LinkID is the scope's current link; older links of the scope are
	// superseded.
	LinkID    string    `json:"link_id"`
	Purpose   string    `json:"purpose"`
	OneTime   bool      `json:"one_time"`
	ValidFrom time.Time `json:"valid_from"`
	ExpiresAt time.Time `json:"expires_at"`

	UsedAt        *time.Time `json:"used_at,omitempty"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
	RevokedReason string     `json:"revoked_reason,omitempty"`
	CanceledAt    *time.Time `json:"canceled_at,omitempty"`

	// Supersedes is the link this state's link replaced (on issued).
	Supersedes string `json:"supersedes,omitempty"`
	// EventID is the action (or click) that made this change.
	EventID string `json:"event_id"`
	// ActionSeq is the ACTIONS stream sequence of the action that issued
	// the current link, or of the revocation that revoked it if that is
	// newer; an older action never supersedes a newer one (a sign-in
	// requested before a revocation but handled after it is born
	// superseded).
	ActionSeq uint64    `json:"action_seq,omitempty"`
	At        time.Time `json:"at"`
	// ChangeSeq is the ACTIONS stream sequence of the newest appointment
	// action (scheduled, rescheduled, canceled) applied to an appointment
	// scope: an older one handled late never undoes a newer one.
	ChangeSeq uint64 `json:"change_seq,omitempty"`
	// Reminders are an appointment's reminder offsets before its start
	// (Go durations, as planned when it was scheduled), kept so that a
	// reschedule re-plans the same reminders.
	Reminders []string `json:"reminders,omitempty"`

	// Appointment is the appointment's current details (appointment scopes).
	Appointment *events.Appointment `json:"appointment,omitempty"`
	// Client is who the scope's emails go to (appointment scopes, whose
	// later actions name only the appointment).
	Client *events.Client `json:"client,omitempty"`
	// Kid is the link key id the current link's token was minted with
	// (the token's "kid." prefix). With the issued event's cause_event_id
	// it lets a worker without the link key (the redeemer, renewing an
	// appointment's current link) queue a mail command for the current
	// link. Set by whoever makes a link current; every other change
	// carries it forward unchanged.
	Kid string `json:"kid,omitempty"`
}

// Verdict is the answer to a click.
type Verdict struct {
	// OK means the link may be redeemed now.
	OK bool
	// Reason is the refusal reason (events.Reason*) when !OK.
	Reason string
}

// Evaluate decides whether linkID may be used at now given its scope's
// state. The order of the checks makes the reason the most useful one: a
// superseded or revoked link says so even if it has also expired.
func Evaluate(linkID string, st *State, now time.Time) Verdict {
	switch {
	case st == nil:
		return Verdict{Reason: events.ReasonNotFound}
	case st.LinkID != linkID:
		return Verdict{Reason: events.ReasonSuperseded}
	case st.CanceledAt != nil:
		return Verdict{Reason: events.ReasonCanceled}
	case st.RevokedAt != nil:
		return Verdict{Reason: events.ReasonRevoked}
	case st.OneTime && st.UsedAt != nil:
		return Verdict{Reason: events.ReasonUsed}
	case now.Before(st.ValidFrom):
		return Verdict{Reason: events.ReasonNotYetValid}
	case !now.Before(st.ExpiresAt):
		return Verdict{Reason: events.ReasonExpired}
	}
	return Verdict{OK: true}
}

// Explain returns the plain-words sentence for a refusal reason, for pages,
// emails and the explain command.
func Explain(reason string) string {
	switch reason {
	case events.ReasonExpired:
		return "This link has expired. Links stop working after a while to keep your account safe."
	case events.ReasonUsed:
		return "This link has already been used. Each sign-in link works once, so nobody else can reuse it."
	case events.ReasonSuperseded:
		return "A newer link was sent to you after this one, so this older link no longer works. Use the newest email, or ask for a new link below."
	case events.ReasonRevoked:
		return "This link was turned off by your practice."
	case events.ReasonCanceled:
		return "This appointment was canceled, so its link no longer works."
	case events.ReasonNotYetValid:
		return "This link is not active yet. Please try again closer to the time in your email."
	case events.ReasonNotFound:
		return "We could not find this link. It may have been copied incompletely; please open it straight from your email."
	}
	return "This link cannot be used."
}
