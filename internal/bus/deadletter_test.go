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
