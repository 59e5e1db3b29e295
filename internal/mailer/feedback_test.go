package mailer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

// tagSpy is a Sender that remembers the tags of what it sends.
type tagSpy struct {
	mailer.Sender
	tags chan map[string]string
}

func (s *tagSpy) Send(ctx context.Context, m *mail.Message) (string, error) {
	s.tags <- m.Tags
	return s.Sender.Send(ctx, m)
}

// Every sent email's provider message id is recorded (sentmail), with the
// mail, link, practice, client and the hash of the address, and the email
// carries the linkpipe_* tags.
func TestSentEmailIsRecordedByMessageIDAndTagged(t *testing.T) {
	e := newEnv(t)
	spy := &tagSpy{Sender: e.sink(t), tags: make(chan map[string]string, 1)}
	e.start(t, spy, prometheus.NewRegistry())
	cmd, _ := e.signin(t, "evt-r1", "Pat@Example.com")
	e.queue(t, cmd)
	var sent *events.LinkEvent
	eventually.True(t, 30*time.Second, func() bool {
		var ok bool
		sent, ok = e.lastEvent(t, cmd.LinkID, events.TypeSent)
		return ok
	}, "the sent event")
	tags := <-spy.tags
	if tags[mail.TagMail] != cmd.MailID || tags[mail.TagLink] != cmd.LinkID || tags[mail.TagPractice] != "acme" {
		t.Errorf("tags %v", tags)
	}
	var r *sentmail.Record
	eventually.True(t, 10*time.Second, func() bool {
		var err error
		r, err = sentmail.NewBook(e.js).Get(ctx(t), sent.MessageID)
		return err == nil
	}, "the message record")
	if r.MailID != cmd.MailID || r.LinkID != cmd.LinkID || r.PracticeID != "acme" || r.ClientID != cmd.To.ID ||
		r.Kind != mail.KindSignin || r.AddressHash != suppress.Hash("pat@example.com") {
		t.Errorf("record %+v", r)
	}
}

// A suppressed address gets no email: links.<id>.failed, permanent, with a
// reason that starts with "suppressed"; another address still gets its
// email, and so does this one once the suppression is lifted.
func TestSuppressedAddressIsNotSent(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	e.start(t, sink, prometheus.NewRegistry())
	list := suppress.NewList(e.js)
	if err := list.Suppress(ctx(t), suppress.Hash("pat@example.com"), &suppress.Entry{
		Cause: suppress.CauseBounce, Detail: "NoEmail: smtp; 550 5.1.1 user unknown", At: t0}); err != nil {
		t.Fatal(err)
	}
	cmd, _ := e.signin(t, "evt-s1", "PAT@example.com")
	e.queue(t, cmd)
	other, _ := e.signin(t, "evt-s2", "sam@example.com")
	e.queue(t, other)
	var failed *events.LinkEvent
	eventually.True(t, 30*time.Second, func() bool {
		var ok bool
		failed, ok = e.lastEvent(t, cmd.LinkID, events.TypeFailed)
		return ok
	}, "the failed event")
	if !failed.Permanent || !strings.HasPrefix(failed.Reason, events.ReasonSuppressedPrefix) ||
		!strings.Contains(failed.Reason, "user unknown") || strings.Contains(failed.Reason, "@") {
		t.Errorf("failed event %+v", failed)
	}
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, other.LinkID, events.TypeSent); return ok }, "the other address's email")
	if _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); ok {
		t.Fatal("a suppressed address was sent an email")
	}
	for _, m := range messages(t, sink) {
		if strings.EqualFold(m.To, "pat@example.com") {
			t.Fatal("the sink holds an email to the suppressed address")
		}
	}

	lifted, err := list.Lift(ctx(t), "Pat@Example.com ", "unsup-1", "acme", t0.Add(time.Hour))
	if err != nil || !lifted {
		t.Fatalf("lift: %v %v", lifted, err)
	}
	if _, ok, err := list.Check(ctx(t), "pat@example.com"); ok || err != nil {
		t.Fatalf("still suppressed after the lift: %v", err)
	}
	again, _ := e.signin(t, "evt-s3", "pat@example.com")
	e.queue(t, again)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, again.LinkID, events.TypeSent); return ok }, "the email after the lift")
}
