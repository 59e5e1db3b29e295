package mailer

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// What the mailer does for delivery feedback (DESIGN.md "Delivery truth"):
// it sends nothing to a suppressed address, tags every email with its mail,
// link and practice ids (SES EmailTags), and records the provider's message
// id of every email it sent (package sentmail), which is what SES's
// delivery, bounce and complaint events are matched by (package feedback).

// suppressed checks the address the email is about to go to against the
// suppression list. A suppressed address ends the email: a permanent
// failure whose reason starts with "suppressed". An error reading the list
// retries the email (sending to a suppressed address would harm the
// account's reputation; a delay harms nothing).
func (m *Mailer) suppressed(ctx context.Context, msg jetstream.Msg, cmd *mail.Command, log *slog.Logger) (outcome, bool) {
	e, ok, err := m.suppressions.Check(ctx, cmd.To.Email)
	switch {
	case err != nil:
		return outcome{retry: true, err: err}, true
	case ok:
		return m.giveUp(ctx, msg, cmd, e.Reason(), log), true
	}
	return outcome{}, false
}

// tag names the email for SES's feedback events.
func tag(email *mail.Message, cmd *mail.Command) {
	email.Tags = map[string]string{mail.TagMail: cmd.MailID, mail.TagPractice: cmd.PracticeID}
	if cmd.LinkID != "" {
		email.Tags[mail.TagLink] = cmd.LinkID
	}
}

// recordMessage stores the provider's message id of a sent email (after
// mail.done: the done marker is what prevents a second send). A record
// that cannot be written is logged, not retried by redelivery (that would
// send the email again): SES's events still carry the linkpipe_mail tag,
// by which package feedback matches them too.
func (m *Mailer) recordMessage(ctx context.Context, d *Done, address string, log *slog.Logger) {
	if d.MessageID == "" {
		return
	}
	r := &sentmail.Record{MessageID: d.MessageID, MailID: d.MailID, Kind: d.Kind, LinkID: d.LinkID,
		PracticeID: d.PracticeID, ClientID: d.ClientID, Purpose: d.Purpose,
		AddressHash: suppress.Hash(address), At: d.At}
	if err := retryShort(ctx, func() error { return m.messages.Put(ctx, r) }); err != nil {
		log.Warn("message id of a sent email not recorded; its feedback will be matched by its tag", keyMessageID, d.MessageID, keyErr, err)
	}
}
