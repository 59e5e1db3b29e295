package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// ErrUnknownLink: a renewal request names a link that was never issued
// (or not by this practice), or one with no address on record.
var ErrUnknownLink = errors.New("unknown link")

// Outcomes of a renewal.
const (
	outcomeRenewed = "renewed" // a fresh sign-in link for the link's client
	outcomeResent  = "resent"  // a telehealth appointment's current link mailed again
)

// renewalRequested handles actions.renewal.requested, which the redeemer
// publishes when a client whose click was refused asks for a new link
// (after its per-client and per-IP limits). The request names only the
// clicked link; the link's first issued record says whose it is, and the
// email goes to the client's current address on record (package
// recipient), never to one a clicker could type, nor to an older address
// the clicked link was mailed to:
//
//   - sign-in and document links: a fresh sign-in link for the client
//     (minted from the request's event id like any sign-in request, so it
//     supersedes the client's older sign-in links), landing where the link
//     would have: the sign-in link's return_to, the document's page;
//   - telehealth links: the appointment's current link mailed again (a
//     reminder email; a new link would not be the appointment's), unless
//     the appointment can no longer be joined with it (canceled, revoked,
//     over), then a sign-in link landing on the appointment's page.
func (i *Issuer) renewalRequested(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.RenewalRequested)
	iss, err := i.readIssued(ctx, a.LinkID)
	if err != nil {
		return result{}, err
	}
	if iss == nil || iss.PracticeID != a.PracticeID {
		return result{}, poison(fmt.Errorf("%w: practice %s has no link %s", ErrUnknownLink, a.PracticeID, a.LinkID))
	}
	// The client's current address: the newest action for the client
	// named it. The clicked link's own record only stands in for a client
	// recorded before current addresses were kept.
	to, err := i.recipients.GetClient(ctx, a.PracticeID, iss.ClientID)
	if errors.Is(err, recipient.ErrNotFound) {
		to, err = i.recipients.Get(ctx, a.LinkID)
	}
	if errors.Is(err, recipient.ErrNotFound) {
		return result{}, poison(fmt.Errorf("%w: link %s has no address on record", ErrUnknownLink, a.LinkID))
	}
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	to.ID = iss.ClientID
	log := d.log.With(keyLinkID, a.LinkID, keyClientID, iss.ClientID)

	returnTo := iss.ReturnTo
	switch iss.Purpose {
	case events.PurposeDocument:
		returnTo = "/documents/" + url.PathEscape(iss.DocumentID)
	case events.PurposeTelehealth:
		returnTo = "/appointments/" + url.PathEscape(iss.AppointmentID)
		res, why, err := i.resendAppointment(ctx, d, iss)
		if err != nil || why == "" {
			return res, err
		}
		log.Debug("telehealth renewal falls back to a sign-in link: "+why, keyOutcome, outcomeRenewed)
	}
	if events.CheckReturnTo("return_to", returnTo) != nil {
		returnTo = ""
	}
	res, err := i.issue(ctx, d, linkSpec{
		purpose:  events.PurposeSignin,
		scope:    scope.Signin(a.PracticeID, iss.ClientID),
		client:   to,
		oneTime:  true,
		ttl:      i.practices.Get(a.PracticeID).Policy.SigninTTL,
		mailKind: mail.KindSignin,
		returnTo: returnTo,
	})
	if err == nil && res.outcome == outcomeIssued {
		res.outcome = outcomeRenewed
	}
	return res, err
}

// resendAppointment mails a telehealth link's appointment's current link
// again. why is not empty when it cannot (and nothing was queued).
func (i *Issuer) resendAppointment(ctx context.Context, d *delivery, iss *events.LinkEvent) (res result, why string, err error) {
	cur, err := i.scopes.Get(ctx, scope.OfLink(iss))
	if err != nil {
		return result{}, "", fmt.Errorf("issuer: %w", err)
	}
	st := &cur.State
	now := i.clock.Now()
	switch v := cur.StateOrNil().Verdict(st.LinkID, now); {
	case !cur.Found():
		return result{}, "the appointment has no state", nil
	case !v.OK && v.Reason != events.ReasonNotYetValid:
		return result{}, "the appointment's link is " + v.Reason, nil
	case st.Appointment == nil || st.Appointment.StartsAt == nil || st.Client == nil:
		return result{}, "the appointment's details are not on record", nil
	}
	mailID := mail.EventMailID(d.env.PracticeID, d.env.EventID, mail.KindAppointmentReminder)
	if err := i.queueApptMail(ctx, d, &cur, mail.KindAppointmentReminder, mailID, "", now); err != nil {
		return result{}, "", err
	}
	d.log.Debug("appointment's current link re-mailed", keyLinkID, st.LinkID, keyMailID, mailID)
	return result{outcome: outcomeResent, linkID: st.LinkID}, "", nil
}
