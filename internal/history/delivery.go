package history

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// What SES did with a link's emails (delivered, bounced, complained) and
// whether the address on record is suppressed: the answer to "why didn't
// my client get the link?".

// delivery is what the timeline knows of a link's email.
type delivery struct {
	// last is the newest mail outcome: sent, failed, delivered, bounced,
	// complained.
	last *events.LinkEvent
	// messageID is SES's id of the link's last email that went out.
	messageID string
	// entry is the suppression of the address that email went to.
	entry *suppress.Entry
}

func (tl *Timeline) deliveryOf(linkID string) *delivery {
	if tl.delivery == nil {
		tl.delivery = map[string]*delivery{}
	}
	d := tl.delivery[linkID]
	if d == nil {
		d = &delivery{}
		tl.delivery[linkID] = d
	}
	return d
}

// noteMail remembers the newest mail outcome of a link.
func (tl *Timeline) noteMail(ev *events.LinkEvent) {
	switch ev.Type {
	case events.TypeSent, events.TypeFailed, events.TypeDelivered, events.TypeBounced, events.TypeComplained:
	default:
		return
	}
	d := tl.deliveryOf(ev.LinkID)
	if d.last == nil || !ev.At.Before(d.last.At) {
		d.last = ev
	}
	if ev.MessageID != "" && ev.Type != events.TypeFailed {
		d.messageID = ev.MessageID
	}
}

// addSuppression looks up the suppression of the address the link's last
// email went to (by the hash in its message-id record: package sentmail;
// no address is read) and adds its entries (suppressed, lifted) to the
// timeline.
func (tl *Timeline) addSuppression(ctx context.Context, js jetstream.JetStream, linkID string) error {
	d := tl.delivery[linkID]
	if d == nil || d.messageID == "" {
		return nil
	}
	rec, err := sentmail.NewBook(js).Get(ctx, d.messageID)
	if errors.Is(err, sentmail.ErrNotFound) {
		return nil // older than the records, or never recorded
	}
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	e, ok, err := suppress.NewList(js).Lookup(ctx, rec.AddressHash)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if !ok {
		return nil
	}
	d.entry = e
	if e.LinkID == linkID || e.LinkID == "" {
		tl.Entries = append(tl.Entries, Entry{At: e.At, LinkID: linkID, What: "suppressed",
			Detail: "address suppressed: " + causeText(e)})
		if e.LiftedAt != nil {
			tl.Entries = append(tl.Entries, Entry{At: *e.LiftedAt, LinkID: linkID, What: "unsuppressed",
				Detail: "suppression lifted by " + e.LiftedBy + " (practice " + e.LiftedPractice + ")"})
		}
	}
	return nil
}

// deliveryDetail describes delivered, bounced and complained events.
func deliveryDetail(ev *events.LinkEvent) (string, bool) {
	switch ev.Type {
	case events.TypeDelivered:
		return "accepted by the recipient's mail server (message id " + ev.MessageID + ")", true
	case events.TypeBounced:
		s := ev.Reason + " bounce (" + BounceText(ev.Detail) + ")"
		if ev.Detail != "" {
			s += ": " + ev.Detail
		}
		return s, true
	case events.TypeComplained:
		s := "the recipient marked the email as spam"
		if ev.Detail != "" {
			s += " (" + ev.Detail + ")"
		}
		return s, true
	}
	return "", false
}

// BounceText says in plain words what a bounce's detail (subtype and
// diagnostic) means.
func BounceText(detail string) string {
	sub, diag, _ := strings.Cut(detail, ":")
	switch {
	case sub == "NoEmail" || strings.Contains(diag, "5.1.1") || strings.Contains(strings.ToLower(diag), "user unknown"):
		return "mailbox does not exist"
	case sub == "Suppressed", sub == "OnAccountSuppressionList":
		return "the address is on SES's suppression list"
	case sub == "MailboxFull":
		return "mailbox full"
	case sub == "MessageTooLarge":
		return "message too large"
	case sub == "ContentRejected", sub == "AttachmentRejected":
		return "the receiving server rejected the content"
	case sub == "General" || sub == "":
		return "the receiving server refused it"
	}
	return strings.TrimSpace(sub)
}

func causeText(e *suppress.Entry) string {
	if e.Cause == suppress.CauseComplaint {
		return "the recipient marked an email as spam"
	}
	return "permanent bounce (" + BounceText(e.Detail) + ")"
}

// clock formats a time for the "Now" lines.
func clock(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// adviseDelivery adds to s what became of the link's last email and the
// suppression of its address; a suppressed address makes "unsuppress"
// the first thing to do.
func (tl *Timeline) adviseDelivery(s *Status, practiceID string) {
	d := tl.delivery[s.LinkID]
	if d == nil {
		return
	}
	var parts []string
	if ev := d.last; ev != nil {
		switch ev.Type {
		case events.TypeBounced:
			parts = append(parts, "last email bounced ("+BounceText(ev.Detail)+") at "+clock(ev.At))
		case events.TypeComplained:
			parts = append(parts, "the client marked the last email as spam at "+clock(ev.At))
		case events.TypeDelivered:
			parts = append(parts, "last email delivered at "+clock(ev.At))
		case events.TypeSent:
			parts = append(parts, "last email accepted by the mail service at "+clock(ev.At)+" (no delivery report yet)")
		case events.TypeFailed:
			if ev.Permanent {
				parts = append(parts, "last email not sent: "+ev.Reason)
			}
		}
	}
	if e := d.entry; e != nil && e.Active() {
		if practiceID == "" {
			practiceID = "P"
		}
		cmd := "linkpipe publish unsuppress --practice " + practiceID + " --email <the client's address>"
		parts = append(parts, "address suppressed since "+clock(e.At)+" ("+causeText(e)+")", "unsuppress with `"+cmd+"`")
		s.Suppressed = true
		s.Todo = "The address is suppressed (" + causeText(e) + "): check it with the client; once it is fixed, unsuppress it (`" +
			cmd + "`), then resend. " + s.Todo
	} else if e != nil {
		parts = append(parts, "address was suppressed, lifted at "+clock(*e.LiftedAt))
	}
	s.Delivery = strings.Join(parts, "; ")
}
