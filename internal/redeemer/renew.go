package redeemer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Results of a renewal request (linkpipe_redeemer_renewals_total{result}).
const (
	renewSent          = "sent"   // a fresh sign-in link was requested
	renewResent        = "resent" // the appointment's current link was mailed again
	renewClientLimited = "client_limited"
	renewIPLimited     = "ip_limited"
	renewUnknown       = "unknown"
	renewFailed        = "failed"
)

// renewIDPrefix prefixes a renewal's own id (the RENEWALS message's
// Nats-Msg-Id and the cause of what it sends); a re-mailed appointment
// link's mail id is mail.RenewalMailID.
const renewIDPrefix = "renew-"

// renewal is the message on renewal.<practice>.<client> that counts one
// renewal against the client's limit (the RENEWALS stream keeps at most
// the limit per subject for the window and refuses more).
type renewal struct {
	LinkID  string    `json:"link_id"`
	EventID string    `json:"event_id"`
	MailID  string    `json:"mail_id,omitempty"`
	At      time.Time `json:"at"`
}

// serveRenew answers POST /l/{token}/renew. The answer is the same whether
// or not anything was sent, so the page tells nothing about the token.
func (r *Redeemer) serveRenew(w http.ResponseWriter, req *http.Request) {
	defer r.observe("renew", time.Now())
	ctx, cancel := context.WithTimeout(req.Context(), opTimeout)
	defer cancel()
	r.m.renewals.WithLabelValues(r.renew(ctx, req)).Inc()
	r.pages.render(w, http.StatusOK, "renewed", pageData{Title: "Check your email"})
}

// renew sends the clicked link's client a way back in, to the address on
// record (never one typed by the clicker), within the per-IP limit of this
// process and the per-client limit shared by every replica (the RENEWALS
// stream), and says what happened:
//
//   - sign-in and document links: a fresh sign-in link is requested
//     (actions.signin.requested; the issuer mints and mails it). A
//     document link's lands on the document's page.
//   - telehealth links: the appointment's current link is mailed again (a
//     mail command on MAIL, kind appointment_reminder), since a new link
//     would not be the appointment's. When the appointment can no longer
//     be joined with it (canceled, revoked, its window over) or the
//     current link cannot be named (see currentAppointmentMail), a fresh
//     sign-in link landing on the appointment's page is requested instead:
//     the client can still reach the portal.
func (r *Redeemer) renew(ctx context.Context, req *http.Request) string {
	now := r.clock.Now()
	if !r.ips.allow(r.clientKey(req), now) {
		return renewIPLimited
	}
	c, err := r.lookup(ctx, req.PathValue("token"))
	if err != nil {
		r.log.Error("redeemer: renewal lookup", keyErr, err)
		return renewFailed
	}
	if c.issued == nil {
		return renewUnknown
	}
	iss := c.issued
	log := r.log.With(keyLinkID, c.linkID, keyPracticeID, iss.PracticeID, keyClientID, iss.ClientID)
	rid := randomID()

	cmd, why, err := r.currentAppointmentMail(ctx, c, rid, now)
	if err != nil {
		log.Error("redeemer: renewal: appointment state", keyErr, err)
		return renewFailed
	}
	var action *events.SigninRequested
	if cmd == nil {
		if why != "" {
			log.Info("redeemer: renewal of a telehealth link falls back to a sign-in link", keyReason, why)
		}
		if action = signinRenewal(c, rid); action == nil {
			return renewUnknown
		}
		if err := action.Validate(); err != nil {
			log.Error("redeemer: renewal request invalid", keyErr, err)
			return renewFailed
		}
	}

	// Count it against the client's limit; the stream refuses the one too many.
	rn := renewal{LinkID: c.linkID, EventID: renewIDPrefix + rid, At: now}
	if cmd != nil {
		rn.MailID = cmd.MailID
	}
	data, err := json.Marshal(&rn)
	if err != nil {
		return renewFailed
	}
	subj := bus.RenewalPrefix + iss.PracticeID + "." + iss.ClientID
	if _, err := bus.PublishOnce(ctx, r.js, subj, rn.EventID, data, nil); err != nil {
		if errors.Is(err, bus.ErrDuplicate) {
			return renewClientLimited
		}
		log.Error("redeemer: renewal not counted", keySubject, subj, keyErr, err)
		return renewFailed
	}

	if cmd != nil {
		if err := mail.Queue(ctx, r.js, cmd); err != nil {
			log.Error("redeemer: appointment link not re-mailed", keyMailID, cmd.MailID, keyErr, err)
			return renewFailed
		}
		log.Info("redeemer: appointment's current link re-mailed", keyMailID, cmd.MailID, "current_link_id", cmd.LinkID)
		return renewResent
	}
	if _, err := events.Publish(ctx, r.js, action); err != nil {
		log.Error("redeemer: renewal not requested", keyEventID, action.EventID, keyErr, err)
		return renewFailed
	}
	log.Info("redeemer: renewal requested", keyEventID, action.EventID)
	return renewSent
}

// signinRenewal is the sign-in request that renews c's link: for the
// client on record of the link, landing where the link would have (the
// sign-in link's return_to, the document's or the appointment's page).
// It is nil when the link has no address on record.
func signinRenewal(c *click, rid string) *events.SigninRequested {
	iss := c.issued
	to, ok := recipient(iss, c.state)
	if !ok {
		return nil
	}
	returnTo := ""
	switch iss.Purpose {
	case events.PurposeDocument:
		returnTo = "/documents/" + url.PathEscape(iss.DocumentID)
	case events.PurposeTelehealth:
		returnTo = "/appointments/" + url.PathEscape(iss.AppointmentID)
	default:
		if events.CheckReturnTo("return_to", iss.ReturnTo) == nil {
			returnTo = iss.ReturnTo
		}
	}
	return &events.SigninRequested{
		Envelope: events.Envelope{EventID: renewIDPrefix + rid, PracticeID: iss.PracticeID},
		Client:   to, ReturnTo: returnTo,
	}
}

// recipient is the address on record for a link: an appointment scope's
// client (its newest address) if the scope state names one, else the
// client of the link's issued event. Its id is always the link's client id.
func recipient(iss *events.LinkEvent, st *scope.State) (events.Client, bool) {
	var to events.Client
	switch {
	case st != nil && st.Client != nil && st.Client.Email != "":
		to = *st.Client
	case iss.Client != nil && iss.Client.Email != "":
		to = *iss.Client
	default:
		return events.Client{}, false
	}
	to.ID = iss.ClientID
	return to, true
}

// currentAppointmentMail returns the mail command that mails a telehealth
// link's appointment's CURRENT link again, or nil (with why, for the log)
// when c is not a telehealth link or the renewal must fall back to a
// sign-in link. It reads the appointment scope's state into c (never
// cached: a reschedule or cancel is seen at once).
//
// The mailer re-derives the token from (kid, purpose, practice, mint event
// id). The mint event id is the current link's issued event's
// cause_event_id. The kid is the clicked token's prefix when the clicked
// link is the current one, else the scope state's kid (scope.State.Kid,
// written by the issuer when it makes a link current). Without it the
// redeemer, which has no link key, cannot name the current link's token,
// and falls back to a sign-in link rather than queue an email the mailer
// could never send.
func (r *Redeemer) currentAppointmentMail(ctx context.Context, c *click, rid string, now time.Time) (*mail.Command, string, error) {
	if c.issued.Purpose != events.PurposeTelehealth {
		return nil, "", nil
	}
	if err := r.readState(ctx, c); err != nil {
		return nil, "", err
	}
	st := c.state
	if st == nil {
		return nil, "the appointment has no state", nil
	}
	if v := st.Verdict(st.LinkID, now); !v.OK && v.Reason != events.ReasonNotYetValid {
		return nil, "the appointment's link is " + v.Reason, nil
	}
	if st.Appointment == nil || st.Appointment.StartsAt == nil {
		return nil, "the appointment's time is not on record", nil
	}
	cur, kid := c.issued, st.Kid
	if st.LinkID == c.linkID {
		kid, _, _ = strings.Cut(c.token, ".")
	} else {
		var err error
		if cur, err = r.issuedOf(ctx, st.LinkID); err != nil {
			return nil, "", err
		}
		if cur == nil || cur.Purpose != events.PurposeTelehealth || scope.OfLink(cur) != c.scope {
			return nil, "the current link's issued event is missing", nil
		}
	}
	if !events.ValidID(kid) {
		return nil, "the current link's key id is not on record", nil
	}
	if !events.ValidID(cur.CauseEventID) {
		return nil, "the current link's mint event is not on record", nil
	}
	to, ok := recipient(cur, st)
	if !ok {
		return nil, "no address on record", nil
	}
	appt := *st.Appointment
	cmd := &mail.Command{
		MailID: mail.RenewalMailID(st.LinkID, rid), Kind: mail.KindAppointmentReminder,
		PracticeID: cur.PracticeID, To: to,
		LinkID: st.LinkID, Kid: kid, Purpose: events.PurposeTelehealth, MintEventID: cur.CauseEventID,
		ValidFrom: st.ValidFrom, ExpiresAt: st.ExpiresAt, Appointment: &appt,
		CauseEventID: renewIDPrefix + rid, At: now,
	}
	if !events.ValidID(cmd.MailID) {
		return nil, "", fmt.Errorf("redeemer: renewal mail id %q is not a valid id", cmd.MailID)
	}
	return cmd, "", nil
}
