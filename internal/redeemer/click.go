package redeemer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// errUnavailable wraps NATS trouble: the answer is a 503 page, never a
// verdict.
var errUnavailable = errors.New("redeemer: link store unavailable")

// scannerAgents are User-Agent fragments (lower case) of email security
// scanners and link previewers that open links before the person does.
var scannerAgents = []string{
	"safelinks", "bingpreview", "microsoft office", "ms-office", "outlook", "proofpoint", "urldefense",
	"mimecast", "barracuda", "forcepoint", "symantec", "trendmicro", "fireeye", "ironport", "cisco",
	"sophos", "zscaler", "checkpoint", "paloalto", "googleimageproxy", "slackbot", "facebookexternalhit",
	"whatsapp", "skypeuripreview", "linkpreview", "python-requests", "go-http-client", "wget", "curl",
	"headlesschrome", "bot", "crawler", "spider", "scanner",
}

// looksLikeScanner flags a touch that is probably not the person.
func looksLikeScanner(req *http.Request) bool {
	if req.Method == http.MethodHead {
		return true
	}
	ua := strings.ToLower(req.UserAgent())
	if ua == "" {
		return true
	}
	for _, s := range scannerAgents {
		if strings.Contains(ua, s) {
			return true
		}
	}
	return false
}

// click is what a request knows about its link.
type click struct {
	token  string
	linkID string
	// issued is nil when the token names no link.
	issued *events.LinkEvent
	// state and seq: the scope's last state (nil if none) and its sequence.
	state *scope.State
	seq   uint64
	scope string
}

// lookup resolves a token to its link and issued record. A token that names
// no link yields a click with a nil issued and no error.
func (r *Redeemer) lookup(ctx context.Context, token string) (*click, error) {
	c := &click{token: token}
	id, err := link.ID(token)
	if err != nil {
		return c, nil
	}
	c.linkID = id
	if c.issued, err = r.issuedOf(ctx, id); err != nil {
		return nil, err
	}
	if c.issued != nil {
		c.scope = scope.OfLink(c.issued)
	}
	return c, nil
}

// issuedOf returns the issued event of a link, nil if the link was never
// issued. Issued events are immutable, so they are cached; scope states,
// which change, never are.
func (r *Redeemer) issuedOf(ctx context.Context, linkID string) (*events.LinkEvent, error) {
	if ev, ok := r.issued.get(linkID); ok {
		r.m.cacheHits.Inc()
		return ev, nil
	}
	var ev events.LinkEvent
	// The first issued record binds the link to its client and scope; a
	// later one on the subject is never trusted.
	if _, err := r.links.FirstJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev); err != nil {
		if errors.Is(err, bus.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %w", errUnavailable, err)
	}
	if ev.LinkID != linkID {
		return nil, nil
	}
	r.issued.put(linkID, &ev)
	return &ev, nil
}

// readState (re)reads the scope's state into c, from any replica: good
// enough for a page, and for a compare-and-set, which refuses a stale read.
func (r *Redeemer) readState(ctx context.Context, c *click) error {
	return r.readStateFrom(ctx, c, r.scopes.Get)
}

// readStateFromLeader reads the scope's state from the stream leader: a
// multi-use (telehealth) redemption has no compare-and-set to catch a stale
// follower read, and must see a cancel or revocation the moment it was
// acknowledged.
func (r *Redeemer) readStateFromLeader(ctx context.Context, c *click) error {
	return r.readStateFrom(ctx, c, r.scopes.GetFromLeader)
}

func (r *Redeemer) readStateFrom(ctx context.Context, c *click, read func(context.Context, string) (scope.Entry, error)) error {
	e, err := read(ctx, c.scope)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	c.state, c.seq = e.StateOrNil(), e.Seq
	return nil
}

func (r *Redeemer) observe(route string, start time.Time) {
	r.m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// serveGet answers GET (and HEAD) /l/{token}: never consumes.
func (r *Redeemer) serveGet(w http.ResponseWriter, req *http.Request) {
	defer r.observe("get", time.Now())
	ctx, cancel := context.WithTimeout(req.Context(), opTimeout)
	defer cancel()
	method := req.Method
	c, err := r.lookup(ctx, req.PathValue("token"))
	if err == nil && c.issued != nil {
		err = r.readState(ctx, c)
	}
	if err != nil {
		r.unavailable(w, req, method, err)
		return
	}
	if c.issued == nil {
		r.m.clicks.WithLabelValues(methodLabel(method), outcomeNotFound).Inc()
		r.refuse(w, req, c, events.ReasonNotFound)
		return
	}
	now := r.clock.Now()
	v := c.state.Verdict(c.linkID, now)
	if method == http.MethodHead {
		// A HEAD is a scanner's: no side effect but the touch.
		r.publishClick(ctx, c, events.TypeTouched, "", v.Reason, req, now)
		if v.OK {
			r.m.clicks.WithLabelValues(methodLabel(method), outcomeConfirm).Inc()
			r.confirm(w, req, c)
			return
		}
		r.m.clicks.WithLabelValues(methodLabel(method), outcomeRefused).Inc()
		r.refuse(w, req, c, v.Reason)
		return
	}
	switch {
	case v.OK:
		r.publishClick(ctx, c, events.TypeTouched, "", "", req, now)
		r.m.clicks.WithLabelValues(methodLabel(method), outcomeConfirm).Inc()
		r.confirm(w, req, c)
	case v.Reason == events.ReasonUsed:
		if reason, through := r.usedBy(req, c, now); through {
			r.through(ctx, w, req, c, now)
		} else {
			r.refused(ctx, w, req, c, reason, now)
		}
	default:
		r.refused(ctx, w, req, c, v.Reason, now)
	}
}

// servePost answers POST /l/{token}: redeems.
func (r *Redeemer) servePost(w http.ResponseWriter, req *http.Request) {
	defer r.observe("post", time.Now())
	ctx, cancel := context.WithTimeout(req.Context(), opTimeout)
	defer cancel()
	c, err := r.lookup(ctx, req.PathValue("token"))
	if err != nil {
		r.unavailable(w, req, req.Method, err)
		return
	}
	if c.issued == nil {
		r.m.clicks.WithLabelValues(methodLabel(req.Method), outcomeNotFound).Inc()
		r.refuse(w, req, c, events.ReasonNotFound)
		return
	}
	conflicted := false
	for range casAttempts {
		if err := r.readState(ctx, c); err != nil {
			r.unavailable(w, req, req.Method, err)
			return
		}
		// A multi-use link is redeemed without a compare-and-set, so
		// nothing would catch a stale follower read; and after a lost
		// compare-and-set a follower may still lag behind the winner's
		// write. In both cases ask the stream leader.
		if conflicted || (c.state != nil && !c.state.OneTime) {
			if err := r.readStateFromLeader(ctx, c); err != nil {
				r.unavailable(w, req, req.Method, err)
				return
			}
		}
		now := r.clock.Now()
		v := c.state.Verdict(c.linkID, now)
		switch {
		case v.OK:
		case v.Reason == events.ReasonUsed:
			if reason, through := r.usedBy(req, c, now); through {
				r.through(ctx, w, req, c, now)
			} else {
				r.refused(ctx, w, req, c, reason, now)
			}
			return
		default:
			r.refused(ctx, w, req, c, v.Reason, now)
			return
		}
		// Sign before the state change: a link must not be burned for a
		// ticket that cannot be made.
		tk, target, err := r.ticketFor(c, now)
		if err != nil {
			r.unavailable(w, req, req.Method, err)
			return
		}
		if c.state.OneTime {
			used := *c.state
			used.Change = scope.ChangeUsed
			used.UsedAt = &now
			used.EventID = "click-" + randomID()
			used.At = now
			if _, err := r.scopes.Update(ctx, c.scope, c.seq, &used); err != nil {
				if errors.Is(err, scope.ErrConflict) {
					r.m.conflicts.Inc()
					conflicted = true
					continue // someone else changed the scope: re-read, re-evaluate
				}
				r.unavailable(w, req, req.Method, err)
				return
			}
		}
		r.m.redemptions.WithLabelValues(c.issued.Purpose).Inc()
		r.redirect(w, req, c, now, tk, target, outcomeRedeemed)
		return
	}
	r.unavailable(w, req, req.Method, fmt.Errorf("redeemer: %s: %d conditional publishes lost in a row", c.scope, casAttempts))
}

// usedBy decides a click on a used link by the browser's session: through
// while the browser that redeemed it has a live session and the link's
// window is not over; expired when that browser comes back after the
// window; used for everyone else.
func (r *Redeemer) usedBy(req *http.Request, c *click, now time.Time) (reason string, through bool) {
	held, live := r.session(req, c.linkID, now)
	switch {
	case held && !c.state.ExpiresAt.IsZero() && !now.Before(c.state.ExpiresAt):
		return events.ReasonExpired, false
	case live:
		return "", true
	}
	return events.ReasonUsed, false
}

// through lets the browser that redeemed a used link continue its session,
// and records the continuation on LINKS (touched, reason continued).
func (r *Redeemer) through(ctx context.Context, w http.ResponseWriter, req *http.Request, c *click, now time.Time) {
	tk, target, err := r.ticketFor(c, now)
	if err != nil {
		r.unavailable(w, req, req.Method, err)
		return
	}
	r.publishClick(ctx, c, events.TypeTouched, events.TouchContinued, "", req, now)
	r.redirect(w, req, c, now, tk, target, outcomeContinued)
}

func (r *Redeemer) redirect(w http.ResponseWriter, req *http.Request, c *click, now time.Time, tk, target, outcome string) {
	// Every pass (redemption or continuation) restarts the 15-minute idle
	// window, as the portal session it continues idles: first-wave rule;
	// the cap is the link's own expiry, and a revocation ends it (the
	// issuer revokes used links that have not expired).
	r.setSession(w, req, c.linkID, now, c.state.ExpiresAt)
	r.m.clicks.WithLabelValues(methodLabel(req.Method), outcome).Inc()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", withTicket(target, tk))
	w.WriteHeader(http.StatusSeeOther)
}

// refused answers a refused click on an existing link and records it.
func (r *Redeemer) refused(ctx context.Context, w http.ResponseWriter, req *http.Request, c *click, reason string, now time.Time) {
	r.m.clicks.WithLabelValues(methodLabel(req.Method), outcomeRefused).Inc()
	r.m.refusals.WithLabelValues(reason).Inc()
	if reason != events.ReasonNotFound { // no event carries not_found
		r.publishClick(ctx, c, events.TypeExpired, reason, "", req, now)
	}
	r.refuse(w, req, c, reason)
}

// ticketFor signs the portal ticket of a redemption and names its target.
func (r *Redeemer) ticketFor(c *click, now time.Time) (tk, target string, err error) {
	iss := c.issued
	base := r.portalBase(r.cfg.Practices.Get(iss.PracticeID))
	tk, err = r.cfg.Signer.Sign(ticket.Claims{
		Audience: origin(base),
		Subject:  iss.ClientID, Practice: iss.PracticeID, Purpose: iss.Purpose, Link: c.linkID,
		IssuedAt: now.Unix(), ExpiresAt: now.Add(ticket.MaxLifetime).Unix(), Idle: r.idleSecs,
	})
	if err != nil {
		return "", "", fmt.Errorf("redeemer: ticket for %s: %w", c.linkID, err)
	}
	return tk, r.target(iss, base), nil
}

// portalBase is the practice's portal_url (no trailing slash), or the
// default portal's when it sets none.
func (r *Redeemer) portalBase(s practice.Settings) string {
	if s.PortalURL != "" && events.CheckPortalURL("", s.PortalURL) == nil {
		return strings.TrimRight(s.PortalURL, "/")
	}
	return r.portal
}

// origin is scheme://host[:port] of an absolute URL: a ticket's aud, and
// what a confirm page's form may be redirected to.
func origin(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Scheme + "://" + p.Host
}

// target is the portal page a redemption lands on (DESIGN.md "Portal
// targets"), below base (portalBase); it is always on the portal.
func (r *Redeemer) target(iss *events.LinkEvent, base string) string {
	switch iss.Purpose {
	case events.PurposeDocument:
		return base + "/documents/" + url.PathEscape(iss.DocumentID)
	case events.PurposeTelehealth:
		return base + "/appointments/" + url.PathEscape(iss.AppointmentID)
	}
	if iss.ReturnTo != "" && events.CheckReturnTo("return_to", iss.ReturnTo) == nil {
		return base + iss.ReturnTo
	}
	if u, err := url.Parse(base); err == nil && u.Path == "" {
		return base + "/"
	}
	return base
}

// withTicket appends ticket=<tk> to target's query, before any fragment.
func withTicket(target, tk string) string {
	frag := ""
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target, frag = target[:i], target[i:]
	}
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
		if strings.HasSuffix(target, "?") || strings.HasSuffix(target, "&") {
			sep = ""
		}
	}
	return target + sep + "ticket=" + url.QueryEscape(tk) + frag
}

// publishClick records a touch, a refused click or a continuation on
// LINKS. Its Nats-Msg-Id is derived from (link, type, reason, the verdict
// of a touch, method label, scanner, minute), so the same click repeated
// within a minute is one message whichever replica answers, and this
// process publishes at most LinkEventBudget of each kind per link; opening
// a link any number of times adds a bounded number of messages. Failing to
// record it never changes the answer.
func (r *Redeemer) publishClick(ctx context.Context, c *click, typ, reason, verdict string, req *http.Request, now time.Time) {
	scanner := looksLikeScanner(req)
	kind := typ
	if reason == events.TouchContinued {
		kind = reason
	}
	id := clickEventID(c.linkID, typ, reason, verdict, methodLabel(req.Method), scanner, now)
	// Continuations are not budgeted: each one is a ticket and must be
	// recorded; they are bounded by the session (15 minutes from the
	// redemption), the per-minute id and the per-IP limit.
	if kind != events.TouchContinued && !r.budgets.take(c.linkID, kind, id) {
		r.m.coalesced.WithLabelValues(kind).Inc()
		return
	}
	ua := req.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	ev := events.LinkEvent{
		EventID: id, Type: typ, LinkID: c.linkID,
		PracticeID: c.issued.PracticeID, ClientID: c.issued.ClientID, Purpose: c.issued.Purpose,
		At: now, Reason: reason, UserAgent: strings.ToValidUTF8(ua, ""), Scanner: scanner,
	}
	if err := bus.PublishEvent(ctx, r.js, &ev); err != nil {
		r.log.Warn("redeemer: click event not published", keyLinkID, c.linkID, keySubject, ev.Subject(), keyErr, err)
	}
}

// clickEventID is the event id (and Nats-Msg-Id) of a click event:
// <type>-<22 characters of a hash of what makes clicks alike>, the same
// on every replica for the same click within the same minute.
func clickEventID(linkID, typ, reason, verdict, method string, scanner bool, now time.Time) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{"linkpipe/click/v1", linkID, typ, reason, verdict, method,
		strconv.FormatBool(scanner), strconv.FormatInt(now.Unix()/60, 10)}, "\x00")))
	return typ + "-" + base64.RawURLEncoding.EncodeToString(sum[:])[:22]
}

func (r *Redeemer) unavailable(w http.ResponseWriter, req *http.Request, method string, err error) {
	r.m.clicks.WithLabelValues(methodLabel(method), outcomeUnavailable).Inc()
	r.log.Error("redeemer: click not answered", keyErr, err)
	r.unavailablePage(w, req)
}

func (r *Redeemer) serveNotFound(w http.ResponseWriter, req *http.Request) {
	r.m.clicks.WithLabelValues(methodLabel(req.Method), outcomeNotFound).Inc()
	r.refuse(w, req, &click{}, events.ReasonNotFound)
}

func (r *Redeemer) serveForbidden(w http.ResponseWriter, req *http.Request) {
	r.forbidden(w, req)
}
