package bus

// Dead letters: what DeadLetter (poison messages) and the mailer (emails
// given up for good) put on DEADLETTER, listed and re-driven for
// `linkpipe deadletter list|replay`.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
)

// HeaderReplayOf is set on a re-driven message: the DEADLETTER sequence it
// was replayed from.
const HeaderReplayOf = "Linkpipe-Replay-Of"

// ErrNotReplayable: the dead letter cannot be re-driven (its original was
// cut when it was dead-lettered, its source is not ACTIONS or a mail
// command, or the source does not fit the dead-letter subject it is on).
var ErrNotReplayable = errors.New("bus: dead letter cannot be replayed")

// Letter is one message on DEADLETTER.
type Letter struct {
	// Seq is its sequence on DEADLETTER.
	Seq uint64
	// Subject is deadletter.<source> (deadletter.mail, deadletter.actions).
	Subject string
	// Source is the original message's subject (mail.cmd.<mail_id>,
	// actions.signin.requested, ...), SourceSeq its sequence on its stream
	// and SourceMsgID its Nats-Msg-Id.
	Source      string
	SourceSeq   uint64
	SourceMsgID string
	// Reason says why it was given up (Linkpipe-Reason).
	Reason string
	// Time is when it was dead-lettered.
	Time time.Time
	// Data is the original message's body.
	Data []byte
	// Truncated: the original was larger than what was kept; it cannot
	// be replayed.
	Truncated bool
}

// ID is the id an operator names the letter by: the mail id of a mail
// command, else the original's Nats-Msg-Id (an action's event id), else
// the event_id of its body, if any.
func (l *Letter) ID() string {
	if id, ok := strings.CutPrefix(l.Source, MailCommandPrefix); ok {
		return id
	}
	if l.SourceMsgID != "" {
		return l.SourceMsgID
	}
	var body struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(l.Data, &body) == nil && events.ValidID(body.EventID) {
		return body.EventID
	}
	return ""
}

// Replayable reports whether Replay can re-drive l (nil), or why not. The
// source header is the letter writer's word, so a source must fit the
// letter's own subject: an action only from deadletter.actions (written by
// the issuer), a mail command only from deadletter.mail (the mailer).
// Otherwise a role that may write another dead-letter subject (the
// redeemer's deadletter.scopes) could have an operator's replay publish a
// practice action for it.
func (l *Letter) Replayable() error {
	switch {
	case l.Truncated:
		return fmt.Errorf("%w: the original was cut to %d bytes when it was dead-lettered", ErrNotReplayable, len(l.Data))
	case l.Source == "":
		return fmt.Errorf("%w: no source subject", ErrNotReplayable)
	case strings.HasPrefix(l.Source, MailCommandPrefix):
		if l.Subject != DeadLetterPrefix+"mail" {
			return fmt.Errorf("%w: a mail command on %s (only the mailer's %smail is re-driven)", ErrNotReplayable, l.Subject, DeadLetterPrefix)
		}
		return nil
	case strings.HasPrefix(l.Source, "actions."):
		if l.Subject != DeadLetterPrefix+"actions" {
			return fmt.Errorf("%w: an action on %s (only the issuer's %sactions is re-driven)", ErrNotReplayable, l.Subject, DeadLetterPrefix)
		}
		return nil
	}
	return fmt.Errorf("%w: source %s is neither a mail command nor an action", ErrNotReplayable, l.Source)
}

func letterOf(seq uint64, subject string, hdr nats.Header, data []byte, at time.Time) Letter {
	l := Letter{Seq: seq, Subject: subject, Source: hdr.Get(HeaderSource), SourceMsgID: hdr.Get(HeaderSourceMsgID),
		Reason: hdr.Get(HeaderReason), Time: at, Data: data}
	l.SourceSeq, _ = strconv.ParseUint(hdr.Get(HeaderSourceSeq), 10, 64)
	if n, err := strconv.Atoi(hdr.Get(HeaderOriginalBytes)); err == nil && n > len(data) {
		l.Truncated = true
	}
	return l
}

// DeadLetters returns the letters on DEADLETTER, oldest first; filter
// narrows them (deadletter.mail; empty: all).
func DeadLetters(ctx context.Context, js jetstream.JetStream, filter string) ([]Letter, error) {
	var filters []string
	if filter != "" {
		filters = []string{filter}
	}
	msgs, err := ReadAll(ctx, js, StreamDeadLetter, filters...)
	if err != nil {
		return nil, err
	}
	out := make([]Letter, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("bus: dead letter metadata: %w", err)
		}
		out = append(out, letterOf(md.Sequence.Stream, m.Subject(), m.Headers(), m.Data(), md.Timestamp))
	}
	return out, nil
}

// DeadLetterAt returns the letter at seq on DEADLETTER, or ErrNotFound.
func DeadLetterAt(ctx context.Context, js jetstream.JetStream, seq uint64) (*Letter, error) {
	s, err := js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", StreamDeadLetter, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %s sequence %d", ErrNotFound, StreamDeadLetter, seq)
	} else if err != nil {
		return nil, fmt.Errorf("bus: dead letter %d: %w", seq, err)
	}
	l := letterOf(m.Sequence, m.Subject, m.Header, m.Data, m.Time)
	return &l, nil
}

// Replay re-drives l: it publishes the original body to its original
// subject and then deletes l from DEADLETTER (a replay that fails again is
// dead-lettered again, as a new letter). A mail command's subject keeps one
// message (MAIL) and its mail.done marker stops a second send, so for a
// mail command mail.cmd.<id>, mail.done.<id> and the mailer's claims
// mail.sending.<id>.> are purged first;
// that needs purge rights on MAIL (admin credentials). The replay's
// Nats-Msg-Id is replay-<seq>-<id>, so JetStream's de-duplication of the
// original does not drop it, and its Linkpipe-Replay-Of header names seq.
func Replay(ctx context.Context, js jetstream.JetStream, l *Letter) error {
	if err := l.Replayable(); err != nil {
		return err
	}
	if id, ok := strings.CutPrefix(l.Source, MailCommandPrefix); ok {
		mailStream, err := js.Stream(ctx, StreamMail)
		if err != nil {
			return fmt.Errorf("bus: stream %s: %w", StreamMail, err)
		}
		for _, subj := range []string{MailCommandPrefix + id, MailDonePrefix + id, MailSendingPrefix + id + ".>"} {
			if err := mailStream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
				return fmt.Errorf("bus: replay %d: purge %s: %w", l.Seq, subj, err)
			}
		}
	} else if !strings.HasPrefix(l.Source, "actions.") || strings.ContainsAny(l.Source, "*> ") {
		return fmt.Errorf("%w: %s", ErrNotReplayable, l.Source)
	}
	msgID := "replay-" + strconv.FormatUint(l.Seq, 10)
	if id := l.ID(); events.ValidID(id) {
		msgID += "-" + id
	}
	hdr := nats.Header{}
	hdr.Set(HeaderReplayOf, strconv.FormatUint(l.Seq, 10))
	if _, err := PublishOnce(ctx, js, l.Source, msgID, l.Data, hdr); err != nil {
		return fmt.Errorf("bus: replay %d: %w", l.Seq, err)
	}
	s, err := js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", StreamDeadLetter, err)
	}
	if err := s.DeleteMsg(ctx, l.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("bus: replayed %d but could not remove it from %s: %w", l.Seq, StreamDeadLetter, err)
	}
	return nil
}
