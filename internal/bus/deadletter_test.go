package bus_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// Replay re-drives what it can and refuses, leaving the letter in place,
// a scope state (re-publishing an old state would be wrong) and a letter
// whose original was cut when it was dead-lettered.
func TestReplayRefusesWhatItCannotRedrive(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(source, subject string, data []byte, original int) {
		t.Helper()
		hdr := nats.Header{}
		hdr.Set(bus.HeaderSource, subject)
		hdr.Set(bus.HeaderReason, "why")
		hdr.Set(bus.HeaderOriginalBytes, strconv.Itoa(original))
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: bus.DeadLetterPrefix + source, Header: hdr, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	put("scopes", "scope.acme.c1.signin", []byte(`{}`), 2)
	put("mail", bus.MailCommandPrefix+"M1-signin", []byte(`{"mail_id":"M1-`), 40)
	put("mail", bus.MailCommandPrefix+"M2-signin", []byte(`{"mail_id":"M2-signin"}`), 23)
	letters, err := bus.DeadLetters(ctx, js, "")
	if err != nil || len(letters) != 3 {
		t.Fatalf("%d letters, %v", len(letters), err)
	}
	for _, l := range letters[:2] {
		if err := bus.Replay(ctx, js, &l); !errors.Is(err, bus.ErrNotReplayable) {
			t.Errorf("replay of %s: %v, want ErrNotReplayable", l.Source, err)
		}
		if _, err := bus.DeadLetterAt(ctx, js, l.Seq); err != nil {
			t.Errorf("%s: refused but removed: %v", l.Source, err)
		}
	}
	if !letters[1].Truncated || letters[2].Truncated || letters[2].ID() != "M2-signin" {
		t.Errorf("letters %+v", letters)
	}
	if err := bus.Replay(ctx, js, &letters[2]); err != nil {
		t.Fatal(err)
	}
	m, err := bus.NewReader(js, bus.StreamMail).Last(ctx, bus.MailCommandPrefix+"M2-signin")
	if err != nil || string(m.Data) != `{"mail_id":"M2-signin"}` || m.Header.Get(bus.HeaderReplayOf) != strconv.FormatUint(letters[2].Seq, 10) {
		t.Fatalf("replayed command %v %v", m, err)
	}
	// Replayed again (the command failed again and was dead-lettered
	// anew): the subject is purged first, so MAIL takes it.
	put("mail", bus.MailCommandPrefix+"M2-signin", []byte(`{"mail_id":"M2-signin"}`), 23)
	again, err := bus.DeadLetters(ctx, js, bus.DeadLetterPrefix+"mail")
	if err != nil || len(again) != 2 {
		t.Fatalf("%d mail letters, %v", len(again), err)
	}
	if err := bus.Replay(ctx, js, &again[1]); err != nil {
		t.Fatalf("second replay: %v", err)
	}
}

// A letter's source header is chosen by whoever wrote the letter. Under the
// least-privilege configuration the redeemer may write deadletter.scopes
// and the mailer deadletter.mail and deadletter.feedback: a letter there
// that claims to be a practice action, or one on deadletter.actions that
// claims to be a mail command, would let that role publish, through an
// operator's `replay --all`, what it may not (a sign-in for any client, to
// any address). Replay re-drives an action only from deadletter.actions
// and a mail command only from deadletter.mail (found by review).
func TestReplayRefusesALetterOutsideItsSourcesSubject(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	signin := []byte(`{"event_id":"evil-1","practice_id":"acme","client":{"id":"c1","email":"mallory@example.com","name":"M"}}`)
	forged := []struct{ letterSubject, source string }{
		{bus.DeadLetterPrefix + "scopes", "actions.signin.requested"},
		{bus.DeadLetterPrefix + "feedback", "actions.signin.requested"},
		{bus.DeadLetterPrefix + "mail", "actions.signin.requested"},
		{bus.DeadLetterPrefix + "scopes", bus.MailCommandPrefix + "M9-signin"},
		{bus.DeadLetterPrefix + "actions", bus.MailCommandPrefix + "M9-signin"},
	}
	for _, f := range forged {
		hdr := nats.Header{}
		hdr.Set(bus.HeaderSource, f.source)
		hdr.Set(bus.HeaderReason, "why")
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: f.letterSubject, Header: hdr, Data: signin}); err != nil {
			t.Fatal(err)
		}
	}
	letters, err := bus.DeadLetters(ctx, js, "")
	if err != nil || len(letters) != len(forged) {
		t.Fatalf("%d letters, %v", len(letters), err)
	}
	for _, l := range letters {
		if err := l.Replayable(); !errors.Is(err, bus.ErrNotReplayable) {
			t.Errorf("letter on %s claiming %s: Replayable %v, want ErrNotReplayable", l.Subject, l.Source, err)
		}
		if err := bus.Replay(ctx, js, &l); !errors.Is(err, bus.ErrNotReplayable) {
			t.Errorf("letter on %s claiming %s: Replay %v, want ErrNotReplayable", l.Subject, l.Source, err)
		}
	}
	for _, stream := range []string{bus.StreamActions, bus.StreamMail} {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := s.Info(ctx); err != nil || info.State.Msgs != 0 {
			t.Errorf("%s holds %v messages after refused replays (%v)", stream, info.State.Msgs, err)
		}
	}
}
