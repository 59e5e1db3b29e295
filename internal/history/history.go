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
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Entry is one line of a timeline.
type Entry struct {
	At     time.Time
	LinkID string
	// What happened: a lifecycle type (issued, sent, ...) or "scope:<change>".
	What   string
	Detail string
}

// Timeline is a client's or a link's history, oldest first.
type Timeline struct {
	Entries []Entry
	// Current is each scope's state now, by scope subject.
	Current map[string]scope.State
	// Scopes maps each link of the timeline to its scope subject.
	Scopes map[string]string
	// delivery is what became of each link's emails (delivery.go).
	delivery map[string]*delivery
	// practices names each link's practice.
	practices map[string]string
}

// readAll returns every message of stream matching the filters.
func readAll(ctx context.Context, js jetstream.JetStream, stream string, filters ...string) ([]jetstream.Msg, error) {
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if err != nil {
		return nil, fmt.Errorf("history: read %s: %w", stream, err)
	}
	var out []jetstream.Msg
	for {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("history: read %s: %w", stream, err)
		}
		n := 0
		pending := uint64(0)
		for m := range batch.Messages() {
			out = append(out, m)
			n++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("history: read %s: %w", stream, err)
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}

// Client returns the timeline of every link of a client.
func Client(ctx context.Context, js jetstream.JetStream, practiceID, clientID string) (*Timeline, error) {
	if !events.ValidID(practiceID) || !events.ValidID(clientID) {
		return nil, errors.New("history: practice and client must be ids ([A-Za-z0-9_-]{1,64})")
	}
	scopeMsgs, err := readAll(ctx, js, bus.StreamScopes, scope.ClientFilter(practiceID, clientID))
	if err != nil {
		return nil, err
	}
	tl := &Timeline{Current: map[string]scope.State{}, Scopes: map[string]string{}}
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
	for id := range linkIDs {
		if err := tl.addLink(ctx, js, id); err != nil {
			return nil, err
		}
	}
	tl.sort()
	return tl, nil
}

// Link returns the timeline of one link, with its scope's changes.
func Link(ctx context.Context, js jetstream.JetStream, linkID string) (*Timeline, error) {
	if !events.ValidID(linkID) {
		return nil, errors.New("history: link must be an id ([A-Za-z0-9_-]{1,64})")
	}
	tl := &Timeline{Current: map[string]scope.State{}, Scopes: map[string]string{}}
	var issued events.LinkEvent
	if _, err := bus.NewReader(js, bus.StreamLinks).FirstJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &issued); err != nil {
		if errors.Is(err, bus.ErrNotFound) {
			return nil, fmt.Errorf("history: no link %s was ever issued", linkID)
		}
		return nil, err
	}
	subject := scope.OfLink(&issued)
	tl.Scopes[linkID] = subject
	scopeMsgs, err := readAll(ctx, js, bus.StreamScopes, subject)
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
	if err := tl.addLink(ctx, js, linkID); err != nil {
		return nil, err
	}
	tl.sort()
	return tl, nil
}

func (tl *Timeline) addLink(ctx context.Context, js jetstream.JetStream, linkID string) error {
	msgs, err := readAll(ctx, js, bus.StreamLinks, "links."+linkID+".>")
	if err != nil {
		return err
	}
	for _, m := range msgs {
		var ev events.LinkEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			continue
		}
		tl.Entries = append(tl.Entries, Entry{At: ev.At, LinkID: ev.LinkID, What: ev.Type, Detail: eventDetail(&ev)})
		tl.noteMail(&ev)
		if tl.practices == nil {
			tl.practices = map[string]string{}
		}
		tl.practices[linkID] = ev.PracticeID
	}
	return tl.addSuppression(ctx, js, linkID)
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

// Print writes the timeline for a person, then each scope's verdict now.
func (tl *Timeline) Print(w io.Writer, now time.Time) {
	if len(tl.Entries) == 0 {
		fmt.Fprintln(w, "No links on record.")
		return
	}
	for _, e := range tl.Entries {
		fmt.Fprintf(w, "%s  %-24s  %-16s %s\n", e.At.UTC().Format("2006-01-02 15:04:05Z"), e.LinkID, e.What, e.Detail)
	}
	fmt.Fprintln(w, "\nNow:")
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
	for _, id := range ids {
		subject := tl.Scopes[id]
		st, ok := tl.Current[subject]
		var verdict string
		switch v := st.Verdict(id, now); {
		case !ok:
			verdict = "no state on record"
		case v.OK:
			verdict = "works"
		case v.Reason == events.ReasonSuperseded:
			verdict = "refused (superseded by " + st.LinkID + "): " + scope.Explain(v.Reason)
		default:
			verdict = "refused (" + v.Reason + "): " + scope.Explain(v.Reason)
		}
		fmt.Fprintf(w, "  %s %s: %s\n", strings.TrimPrefix(subject, scope.Prefix), id, verdict)
		tl.printDelivery(w, id, tl.practices[id])
	}
}
