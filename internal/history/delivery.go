package history

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/locale"
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
			Detail: "address suppressed: " + causeText(English(), e)})
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
func BounceText(detail string) string { return bounceText(English(), detail) }

// bounceText is BounceText in l; an unknown subtype is given as it is.
func bounceText(l *locale.Lang, detail string) string {
	sub, diag, _ := strings.Cut(detail, ":")
	switch {
	case sub == "NoEmail" || strings.Contains(diag, "5.1.1") || strings.Contains(strings.ToLower(diag), "user unknown"):
		return l.T("mailbox does not exist")
	case sub == "Suppressed", sub == "OnAccountSuppressionList":
		return l.T("the address is on SES's suppression list")
	case sub == "MailboxFull":
		return l.T("mailbox full")
	case sub == "MessageTooLarge":
		return l.T("message too large")
	case sub == "ContentRejected", sub == "AttachmentRejected":
		return l.T("the receiving server rejected the content")
	case sub == "General" || sub == "":
		return l.T("the receiving server refused it")
	}
	return strings.TrimSpace(sub)
}

func causeText(l *locale.Lang, e *suppress.Entry) string {
	if e.Cause == suppress.CauseComplaint {
		return l.T("the recipient marked an email as spam")
	}
	return l.T("permanent bounce (%s)", bounceText(l, e.Detail))
}

// clock formats a time for the delivery lines: "2006-01-02 15:04Z" in
// English, the language's long date in UTC otherwise.
func clock(l *locale.Lang, t time.Time) string {
	if l.Code() == "en" {
		return t.UTC().Format("2006-01-02 15:04Z")
	}
	return l.Date(t.UTC(), locale.LongDate) + " UTC"
}

// adviseDelivery adds to s, in l, what became of the link's last email
// and the suppression of its address; a suppressed address makes
// "unsuppress" the first thing to do.
func (tl *Timeline) adviseDelivery(l *locale.Lang, s *Status, practiceID string) {
	d := tl.delivery[s.LinkID]
	if d == nil {
		return
	}
	var parts []string
	if ev := d.last; ev != nil {
		switch ev.Type {
		case events.TypeBounced:
			parts = append(parts, l.T("last email bounced (%s) at %s", bounceText(l, ev.Detail), clock(l, ev.At)))
		case events.TypeComplained:
			parts = append(parts, l.T("the client marked the last email as spam at %s", clock(l, ev.At)))
		case events.TypeDelivered:
			parts = append(parts, l.T("last email delivered at %s", clock(l, ev.At)))
		case events.TypeSent:
			parts = append(parts, l.T("last email accepted by the mail service at %s (no delivery report yet)", clock(l, ev.At)))
		case events.TypeFailed:
			if ev.Permanent {
				parts = append(parts, l.T("last email not sent: %s", ev.Reason))
			}
		}
	}
	if e := d.entry; e != nil && e.Active() {
		if practiceID == "" {
			practiceID = "P"
		}
		cmd := "linkpipe publish unsuppress --practice " + practiceID + " --email " + l.T("<the client's address>")
		parts = append(parts, l.T("address suppressed since %s (%s)", clock(l, e.At), causeText(l, e)), l.T("unsuppress with `%s`", cmd))
		s.Suppressed = true
		s.Todo = l.T("The address is suppressed (%s): check it with the client; once it is fixed, unsuppress it (`%s`), then resend. %s",
			causeText(l, e), cmd, s.Todo)
	} else if e != nil {
		parts = append(parts, l.T("address was suppressed, lifted at %s", clock(l, *e.LiftedAt)))
	}
	s.Delivery = strings.Join(parts, "; ")
}
