package scope

import (
	"time"

	"github.com/linkpipe/linkpipe/events"
)

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
	// superseded, or revoked when the revocation found no scope: see
	// Revocation). On a revocation record, the revocation's sequence.
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

// Verdict decides whether linkID may be used at now given the scope's
// state st (nil: the scope has no state, so the link was never issued).
// The order of the checks makes the reason the most useful one: a
// superseded or revoked link says so even if it has also expired.
func (st *State) Verdict(linkID string, now time.Time) Verdict {
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

// Live reports whether linkID is the scope's current link and has not
// been revoked or canceled: the only kind of link worth an email. Use and
// time are not considered (a used telehealth link is live).
func (st *State) Live(linkID string) bool {
	return st != nil && linkID != "" && st.LinkID == linkID && st.RevokedAt == nil && st.CanceledAt == nil
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
