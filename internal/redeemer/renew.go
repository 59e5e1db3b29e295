package redeemer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// Results of a renewal request (linkpipe_redeemer_renewals_total{result}).
const (
	renewSent          = "sent"
	renewClientLimited = "client_limited"
	renewIPLimited     = "ip_limited"
	renewUnknown       = "unknown"
	renewFailed        = "failed"
)

// renewal is the message on renewal.<practice>.<client> that counts one
// renewal against the client's limit (the RENEWALS stream keeps at most
// the limit per subject for the window and refuses more).
type renewal struct {
	LinkID  string    `json:"link_id"`
	EventID string    `json:"event_id"`
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

// renew asks the issuer for a fresh sign-in link for the client on record of
// the link, within the per-IP and per-client limits, and says what happened.
func (r *Redeemer) renew(ctx context.Context, req *http.Request) string {
	now := r.clock.Now()
	if !r.ips.allow(clientIP(req), now) {
		return renewIPLimited
	}
	c, err := r.lookup(ctx, req.PathValue("token"))
	if err != nil {
		r.log.Error("redeemer: renewal lookup", keyErr, err)
		return renewFailed
	}
	if c.issued == nil || c.issued.Client == nil || c.issued.Client.Email == "" {
		return renewUnknown
	}
	iss := c.issued
	client := *iss.Client
	if client.ID == "" {
		client.ID = iss.ClientID
	}
	// Every renewal is a sign-in link (never an address typed by the
	// clicker); a document or telehealth link's renewal lands on its page.
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
	action := &events.SigninRequested{
		Envelope: events.Envelope{EventID: "renew-" + randomID(), PracticeID: iss.PracticeID},
		Client:   client, ReturnTo: returnTo,
	}
	if err := action.Validate(); err != nil {
		r.log.Error("redeemer: renewal request invalid", keyLinkID, c.linkID, keyPracticeID, iss.PracticeID, keyErr, err)
		return renewFailed
	}
	data, err := json.Marshal(renewal{LinkID: c.linkID, EventID: action.EventID, At: now})
	if err != nil {
		return renewFailed
	}
	subj := bus.RenewalPrefix + iss.PracticeID + "." + client.ID
	if _, err := bus.PublishOnce(ctx, r.js, subj, action.EventID, data, nil); err != nil {
		if errors.Is(err, bus.ErrDuplicate) {
			return renewClientLimited
		}
		r.log.Error("redeemer: renewal not counted", keyLinkID, c.linkID, keySubject, subj, keyErr, err)
		return renewFailed
	}
	if _, err := events.Publish(ctx, r.js, action); err != nil {
		r.log.Error("redeemer: renewal not requested", keyLinkID, c.linkID, keyEventID, action.EventID, keyErr, err)
		return renewFailed
	}
	r.log.Info("redeemer: renewal requested", keyLinkID, c.linkID, keyPracticeID, iss.PracticeID, keyEventID, action.EventID)
	return renewSent
}
