// Package history owns reading the ledger back for people: the timeline of
// a client's links (or of one link) from the SCOPES stream (which link was
// current when, used, revoked, canceled, superseded by which) and the LINKS
// stream (issued, sent, failed, delivered, bounced, complained, touched,
// used, refused with reason), and the suppression of each link's address
// (package suppress), so that
// support can answer "why can't my client get in" in one command.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// catalogue puts the words support reads (verdicts, what to do, the fate
// of emails) in English or Spanish; it is immutable.
var catalogue = locale.MustNew()

// English is the language of Statuses, the explain command and the JSON.
func English() *locale.Lang { return catalogue.English() }

// ErrNoSuchLink: Link was given an id no link was ever issued with.
var ErrNoSuchLink = errors.New("no such link was ever issued")

// Entry is one line of a timeline.
type Entry struct {
	At     time.Time `json:"at"`
	LinkID string    `json:"link_id"`
	// What happened: a lifecycle type (issued, sent, ...) or "scope:<change>".
	What   string `json:"what"`
	Detail string `json:"detail"`
}

// Timeline is a client's or a link's history, oldest first.
type Timeline struct {
	Entries []Entry
	// Current is each scope's state now, by scope subject.
	Current map[string]scope.State
	// Scopes maps each link of the timeline to its scope subject.
	Scopes map[string]string
	// Issued is each link's issued event; Mail the last sent or failed
	// event of its email, when there is one.
	Issued map[string]events.LinkEvent
	Mail   map[string]events.LinkEvent
	// delivery is what became of each link's emails and the suppression
	// of its address (delivery.go).
	delivery map[string]*delivery
}

func newTimeline() *Timeline {
	return &Timeline{Current: map[string]scope.State{}, Scopes: map[string]string{},
		Issued: map[string]events.LinkEvent{}, Mail: map[string]events.LinkEvent{}}
}

// Client returns the timeline of every link of a client.
func Client(ctx context.Context, js jetstream.JetStream, practiceID, clientID string) (*Timeline, error) {
	if !events.ValidID(practiceID) || !events.ValidID(clientID) {
		return nil, errors.New("history: practice and client must be ids ([A-Za-z0-9_-]{1,64})")
	}
	scopeMsgs, err := bus.ReadAll(ctx, js, bus.StreamScopes, scope.ClientFilter(practiceID, clientID))
	if err != nil {
		return nil, err
	}
	tl := newTimeline()
	linkIDs := map[string]bool{}
	for _, m := range scopeMsgs {
		var st scope.State
		if err := json.Unmarshal(m.Data(), &st); err != nil {
			continue
		}
		tl.Current[m.Subject()] = st
		if st.LinkID != "" {
			linkIDs[st.LinkID] = true
			tl.Scopes[st.LinkID] = m.Subject()
		}
		tl.Entries = append(tl.Entries, scopeEntry(m.Subject(), st))
	}
	ids := make([]string, 0, len(linkIDs))
	for id := range linkIDs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if err := tl.addLinks(ctx, js, ids); err != nil {
		return nil, err
	}
	tl.sort()
	return tl, nil
}

// Link returns the timeline of one link, with its scope's changes.
func Link(ctx context.Context, js jetstream.JetStream, linkID string) (*Timeline, error) {
	if !events.ValidID(linkID) {
		return nil, errors.New("history: link must be an id ([A-Za-z0-9_-]{1,64})")
	}
	tl := newTimeline()
	var issued events.LinkEvent
	if _, err := bus.NewReader(js, bus.StreamLinks).FirstJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &issued); err != nil {
		if errors.Is(err, bus.ErrNotFound) {
			return nil, fmt.Errorf("history: link %s: %w", linkID, ErrNoSuchLink)
		}
		return nil, err
	}
	subject := scope.OfLink(&issued)
	tl.Scopes[linkID] = subject
	scopeMsgs, err := bus.ReadAll(ctx, js, bus.StreamScopes, subject)
	if err != nil {
		return nil, err
	}
	for _, m := range scopeMsgs {
		var st scope.State
		if json.Unmarshal(m.Data(), &st) == nil {
			tl.Current[m.Subject()] = st
			tl.Entries = append(tl.Entries, scopeEntry(m.Subject(), st))
		}
	}
	if err := tl.addLinks(ctx, js, []string{linkID}); err != nil {
		return nil, err
	}
	tl.sort()
	return tl, nil
}

// linksPerRead is how many links' events one ordered consumer reads (one
// filter subject each): a client's links cost a read per this many, not
// one each.
const linksPerRead = 64

// addLinks adds the lifecycle events of links to the timeline.
func (tl *Timeline) addLinks(ctx context.Context, js jetstream.JetStream, linkIDs []string) error {
	all := linkIDs
	for len(linkIDs) > 0 {
		n := min(len(linkIDs), linksPerRead)
		filters := make([]string, n)
		for i, id := range linkIDs[:n] {
			filters[i] = "links." + id + ".>"
		}
		linkIDs = linkIDs[n:]
		msgs, err := bus.ReadAll(ctx, js, bus.StreamLinks, filters...)
		if err != nil {
			return err
		}
		tl.addEvents(msgs)
	}
	for _, id := range all {
		if err := tl.addSuppression(ctx, js, id); err != nil {
			return err
		}
	}
	return nil
}

func (tl *Timeline) addEvents(msgs []jetstream.Msg) {
	for _, m := range msgs {
		var ev events.LinkEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			continue
		}
		tl.Entries = append(tl.Entries, Entry{At: ev.At, LinkID: ev.LinkID, What: ev.Type, Detail: eventDetail(&ev)})
		tl.noteMail(&ev)
		switch ev.Type {
		case events.TypeIssued:
			tl.Issued[ev.LinkID] = ev
		case events.TypeSent, events.TypeFailed:
			if last, ok := tl.Mail[ev.LinkID]; !ok || !ev.At.Before(last.At) {
				tl.Mail[ev.LinkID] = ev
			}
		}
	}
}

func (tl *Timeline) sort() {
	sort.SliceStable(tl.Entries, func(i, j int) bool { return tl.Entries[i].At.Before(tl.Entries[j].At) })
}

func scopeEntry(subject string, st scope.State) Entry {
	d := []string{"scope " + strings.TrimPrefix(subject, scope.Prefix)}
	switch st.Change {
	case scope.ChangeIssued:
		d = append(d, fmt.Sprintf("now current, valid %s to %s", st.ValidFrom.Format(time.RFC3339), st.ExpiresAt.Format(time.RFC3339)))
		if st.Supersedes != "" {
			d = append(d, "supersedes "+st.Supersedes)
		}
	case scope.ChangeRevoked:
		if sub, err := scope.Parse(subject); err == nil && sub.Kind == scope.KindRevocation {
			d = append(d, "every link requested before this revocation is revoked, whenever it is issued")
		}
		d = append(d, "revoked: "+st.RevokedReason)
	case scope.ChangeRescheduled:
		d = append(d, "window moved to end "+st.ExpiresAt.Format(time.RFC3339))
	}
	if st.EventID != "" {
		d = append(d, "by "+st.EventID)
	}
	return Entry{At: st.At, LinkID: st.LinkID, What: "scope:" + st.Change, Detail: strings.Join(d, "; ")}
}

func eventDetail(ev *events.LinkEvent) string {
	var d []string
	switch ev.Type {
	case events.TypeIssued:
		d = append(d, ev.Purpose)
		d = append(d, "for client "+ev.ClientID)
		if ev.ExpiresAt != nil {
			d = append(d, "expires "+ev.ExpiresAt.Format(time.RFC3339))
		}
		if ev.Supersedes != "" {
			d = append(d, "supersedes "+ev.Supersedes)
		}
	case events.TypeSent:
		d = append(d, "mail "+ev.MailKind, "message id "+ev.MessageID)
	case events.TypeFailed:
		kind := "temporary"
		if ev.Permanent {
			kind = "permanent"
		}
		d = append(d, kind+" failure: "+ev.Reason)
	case events.TypeExpired:
		d = append(d, "click refused: "+ev.Reason+" — "+scope.Explain(ev.Reason))
	case events.TypeTouched:
		if ev.Scanner {
			d = append(d, "opened by what looks like an email security scanner")
		} else {
			d = append(d, "opened, not yet confirmed")
		}
	case events.TypeRevoked:
		d = append(d, ev.Reason)
	default:
		if s, ok := deliveryDetail(ev); ok {
			d = append(d, s)
		}
	}
	if ev.UserAgent != "" {
		d = append(d, "agent "+ev.UserAgent)
	}
	return strings.Join(d, "; ")
}

// Print writes the timeline for a person, then each link's verdict now
// and what to do about it.
func (tl *Timeline) Print(w io.Writer, now time.Time) {
	if len(tl.Entries) == 0 {
		fmt.Fprintln(w, "No links on record.")
		return
	}
	for _, e := range tl.Entries {
		fmt.Fprintf(w, "%s  %-24s  %-16s %s\n", e.At.UTC().Format("2006-01-02 15:04:05Z"), e.LinkID, e.What, e.Detail)
	}
	fmt.Fprintln(w, "\nNow:")
	for _, s := range tl.Statuses(now) {
		var verdict string
		switch {
		case s.Reason == "" && s.Works:
			verdict = "works"
		case s.Reason == "":
			verdict = "no state on record"
		case s.Reason == events.ReasonSuperseded:
			verdict = "refused (superseded by " + s.SupersededBy + "): " + scope.Explain(s.Reason)
		default:
			verdict = "refused (" + s.Reason + "): " + scope.Explain(s.Reason)
		}
		fmt.Fprintf(w, "  %s %s: %s\n      what to do: %s\n", s.Scope, s.LinkID, verdict, s.Todo)
		if s.Delivery != "" {
			fmt.Fprintf(w, "      %s\n", s.Delivery)
		}
	}
}

// Status is one link's verdict today, in plain words for support.
type Status struct {
	LinkID string `json:"link_id"`
	// Scope is the link's scope without its prefix: <practice>.<client>.<kind>.
	Scope   string `json:"scope"`
	Purpose string `json:"purpose,omitempty"`
	// Works tells whether a click on the link would be honoured now;
	// Reason is the refusal reason (events.Reason*) when it would not.
	Works  bool   `json:"works"`
	Reason string `json:"reason,omitempty"`
	// SupersededBy is the scope's current link when this one is superseded.
	SupersededBy string `json:"superseded_by,omitempty"`
	// Verdict says whether and why the link works; Todo what to do about it
	// ("resend", "unsuppress", "the appointment was canceled").
	Verdict string `json:"verdict"`
	Todo    string `json:"todo"`
	// Mail is the fate of the link's email: "sent", "failed", "failed
	// permanently" or "" (none recorded yet).
	Mail string `json:"mail,omitempty"`
	// Delivery says what SES reported about the link's last email and
	// whether its address is suppressed, with the command that lifts it
	// ("last email bounced (mailbox does not exist) at ...; address
	// suppressed since ...; unsuppress with ...").
	Delivery string `json:"delivery,omitempty"`
	// Suppressed tells that the link's address is suppressed now.
	Suppressed bool `json:"suppressed,omitempty"`
	// Entries are the link's own lines of the timeline, oldest first.
	Entries []Entry `json:"entries"`
}

// Statuses returns every link of the timeline with its verdict at now,
// ordered by scope then link id, in English.
func (tl *Timeline) Statuses(now time.Time) []Status { return tl.StatusesIn(now, English()) }

// StatusesIn is Statuses with the verdicts, what to do, the mail and the
// delivery in l (nil: English). Ids, reason codes, commands and the
// timeline's entries stay as they are.
func (tl *Timeline) StatusesIn(now time.Time, l *locale.Lang) []Status {
	if l == nil {
		l = English()
	}
	ids := make([]string, 0, len(tl.Scopes))
	for id := range tl.Scopes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if tl.Scopes[ids[i]] != tl.Scopes[ids[j]] {
			return tl.Scopes[ids[i]] < tl.Scopes[ids[j]]
		}
		return ids[i] < ids[j]
	})
	out := make([]Status, 0, len(ids))
	for _, id := range ids {
		subject := tl.Scopes[id]
		s := Status{LinkID: id, Scope: strings.TrimPrefix(subject, scope.Prefix), Entries: []Entry{}}
		for _, e := range tl.Entries {
			if e.LinkID == id {
				s.Entries = append(s.Entries, e)
			}
		}
		issued, hasIssued := tl.Issued[id]
		s.Purpose = issued.Purpose
		if m, ok := tl.Mail[id]; ok {
			switch {
			case m.Type == events.TypeSent:
				s.Mail = l.T("sent")
			case m.Permanent:
				s.Mail = l.T("failed permanently")
			default:
				s.Mail = l.T("failed")
			}
		}
		st, ok := tl.Current[subject]
		if !ok {
			s.Verdict = l.T("No state on record for its scope: linkpipe cannot tell whether it works.")
			s.Todo = l.T("Resend: a new link gets a fresh record.")
			out = append(out, s)
			continue
		}
		if s.Purpose == "" {
			s.Purpose = st.Purpose
		}
		v := st.Verdict(id, now)
		s.Works, s.Reason = v.OK, v.Reason
		if v.Reason == events.ReasonSuperseded {
			s.SupersededBy = st.LinkID
		}
		validFrom, expiresAt := st.ValidFrom, st.ExpiresAt
		if hasIssued && st.LinkID != id { // a superseded link's own window
			if issued.ValidFrom != nil {
				validFrom = *issued.ValidFrom
			}
			if issued.ExpiresAt != nil {
				expiresAt = *issued.ExpiresAt
			}
		}
		s.Verdict, s.Todo = advise(l, s, st, tl.Mail[id], validFrom, expiresAt)
		tl.adviseDelivery(l, &s, issued.PracticeID)
		out = append(out, s)
	}
	return out
}

// when writes a day and time of a verdict: "Mon 2 Jan 2006 15:04 UTC" in
// English, the language's long date in UTC otherwise.
func when(l *locale.Lang, t time.Time) string {
	if l.Code() == "en" {
		return t.UTC().Format("Mon 2 Jan 2006 15:04 UTC")
	}
	return l.Date(t.UTC(), locale.LongDate) + " UTC"
}

// advise puts a link's verdict into words for support and says what to do.
func advise(l *locale.Lang, s Status, st scope.State, mail events.LinkEvent, validFrom, expiresAt time.Time) (verdict, todo string) {
	resend := l.T("Resend: publish the action again with a new event id, and linkpipe mails a new link.")
	switch s.Purpose {
	case events.PurposeSignin:
		resend = l.T("Resend: send the client a new sign-in link (or they can ask for one from the refusal page).")
	case events.PurposeDocument:
		resend = l.T("Resend: share the document again (a new share id) for a new link.")
	case events.PurposeTelehealth:
		resend = l.T("Resend: an appointment reminder carries the appointment's current link.")
	}
	undelivered := mail.Type == events.TypeFailed && mail.Permanent
	switch {
	case s.Works && undelivered:
		verdict := l.T("Works, but its email was not delivered (%s).", mail.Reason)
		if l.Code() != "en" && strings.HasPrefix(mail.Reason, events.ReasonSuppressedPrefix) {
			// The mailer's reason is English: said in the page's language,
			// its words stay in the timeline.
			verdict = l.T("Works, but its email was not sent: the address is suppressed after a permanent bounce or a spam complaint (the timeline has the details).")
		}
		return verdict, l.T("Check the client's address. If it was suppressed after a bounce or complaint and is now fixed, unsuppress it (actions.address.unsuppressed), then resend. %s", resend)
	case s.Works && mail.Type == events.TypeFailed:
		return l.T("Works; its email failed for now and will be retried (%s).", mail.Reason),
			l.T("Wait a few minutes for the retry; if the email still does not arrive, resend.")
	case s.Works:
		return l.T("Works: the client can use it until %s.", when(l, expiresAt)),
			l.T("Nothing to do. If the client cannot find the email, ask them to check spam, or resend.")
	}
	switch s.Reason {
	case events.ReasonSuperseded:
		return l.T("Refused: a newer link (%s) replaced this one.", s.SupersededBy),
			l.T("Ask the client to use the newest email; if it did not arrive, resend.")
	case events.ReasonUsed:
		if st.UsedAt != nil {
			return l.T("Refused: it was already used on %s; each such link works once.", when(l, *st.UsedAt)), resend
		}
		return l.T("Refused: it was already used; each such link works once."), resend
	case events.ReasonExpired:
		if s.Purpose == events.PurposeTelehealth {
			return l.T("Refused: the appointment's window ended %s.", when(l, expiresAt)),
				l.T("If the appointment moves, reschedule it: the same link works again in its new window.")
		}
		return l.T("Refused: it expired %s.", when(l, expiresAt)), resend
	case events.ReasonRevoked:
		reason := st.RevokedReason
		if reason == "" {
			reason = l.T("no reason given")
		}
		return l.T("Refused: the practice revoked the client's links (%s).", reason),
			l.T("Resend only if the reason for the revocation no longer holds.")
	case events.ReasonCanceled:
		return l.T("Refused: the appointment was canceled."),
			l.T("Nothing to resend: the appointment was canceled. Book it again to send a new link.")
	case events.ReasonNotYetValid:
		return l.T("Not yet valid: it works from %s.", when(l, validFrom)),
			l.T("Nothing to do: ask the client to try again from %s.", when(l, validFrom))
	}
	return l.T("Refused (%s).", s.Reason), resend
}
