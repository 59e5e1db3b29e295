package mail

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// Mail ids are made here and nowhere else. A mail id is the suffix of the
// command's subject (mail.cmd.<mail_id>) and its Nats-Msg-Id; MAIL keeps
// one message per subject, so an id is queued once, whatever replays.

// LinkMailID is the id of the one email that first carries a link: the
// link id and the kind.
func LinkMailID(linkID, kind string) string { return linkID + "-" + kind }

// EventMailID is the id of an email an action causes: a hash of the
// practice and event ids (each may be 64 characters) followed by the kind,
// so it is unique per action and kind, stable across redeliveries and
// re-publishes, and says what it is.
func EventMailID(practiceID, eventID, kind string) string {
	sum := sha256.Sum256([]byte("linkpipe/mail/v1\x00" + practiceID + "\x00" + eventID))
	return "M" + base64.RawURLEncoding.EncodeToString(sum[:18]) + "-" + kind
}

// Queue queues cmd as mail.cmd.<mail_id> once. A command already queued
// (MAIL refuses a second message on the subject) is not an error.
func Queue(ctx context.Context, js jetstream.JetStream, cmd *Command) error {
	data, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("mail: encode command %s: %w", cmd.MailID, err)
	}
	_, err = bus.PublishOnce(ctx, js, bus.MailCommandPrefix+cmd.MailID, cmd.MailID, data, nil)
	if err != nil && !errors.Is(err, bus.ErrDuplicate) {
		return fmt.Errorf("mail: queue %s: %w", cmd.MailID, err)
	}
	return nil
}
