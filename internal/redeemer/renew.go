package redeemer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// Results of a renewal request (linkpipe_redeemer_renewals_total{result}).
const (
	renewRequested     = "requested" // the issuer was asked to mail the link's client
	renewClientLimited = "client_limited"
	renewIPLimited     = "ip_limited"
	renewUnknown       = "unknown"
	renewFailed        = "failed"
)

// renewIDPrefix prefixes a renewal's own id (the RENEWALS message's
// Nats-Msg-Id and the event id of its actions.renewal.requested).
const renewIDPrefix = "renew-"

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
	r.renewed(w, req)
}

// renew asks, for the clicked link's client, for a way back in, within the
// per-IP limit of this process and the per-client limit shared by every
// replica (the RENEWALS stream), and says what happened. The request is
// narrow: actions.renewal.requested names only the link. The issuer
// resolves it to the link's client and address on record (never an
// address typed by the clicker) and sends a fresh sign-in link, or a
// telehealth appointment's current link again (see the issuer's
// renewalRequested). The redeemer holds no address and publishes no mail
// command.
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
	action := &events.RenewalRequested{
		Envelope: events.Envelope{EventID: renewIDPrefix + randomID(), PracticeID: iss.PracticeID},
		LinkID:   c.linkID,
	}
	if err := action.Validate(); err != nil {
		log.Error("redeemer: renewal request invalid", keyErr, err)
		return renewFailed
	}

	// Count it against the client's limit; the stream refuses the one too many.
	rn := renewal{LinkID: c.linkID, EventID: action.EventID, At: now}
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
	if _, err := events.Publish(ctx, r.js, action); err != nil {
		log.Error("redeemer: renewal not requested", keyEventID, action.EventID, keyErr, err)
		return renewFailed
	}
	log.Debug("redeemer: renewal requested", keyEventID, action.EventID)
	return renewRequested
}
