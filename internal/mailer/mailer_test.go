package mailer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
)

const publicURL = "https://links.acme.example"

var t0 = time.Date(2026, 11, 23, 14, 5, 0, 0, time.UTC)

type env struct {
	srv   *bustest.Server
	js    jetstream.JetStream
	keys  *link.Keyring
	dir   *practice.Directory
	clock *clock.Fake
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	dir, err := practice.Open(ctx(t), js, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	if err := dir.Put(ctx(t), &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "p1", PracticeID: "acme"},
		Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "desk@acme.example", PortalURL: "https://portal.acme.example"},
	}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	return &env{srv: srv, js: js, keys: link.NewKeyring("k1", key), dir: dir, clock: clock.NewFake(t0)}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// signin makes the mail command the issuer would queue for a sign-in
// request with this event id, and returns its token.
func (e *env) signin(t testing.TB, eventID, email string) (*mail.Command, string) {
	t.Helper()
	token, err := e.keys.Mint("k1", events.PurposeSignin, scope.Signin("acme", "c-"+eventID), eventID)
	if err != nil {
		t.Fatal(err)
	}
	id, err := link.ID(token)
	if err != nil {
		t.Fatal(err)
	}
	// What the issuer does: record the link's address.
	if err := recipient.NewBook(e.js).Put(ctx(t), id, events.Client{ID: "c-" + eventID, Email: email, Name: "Pat"}); err != nil {
		t.Fatal(err)
	}
	return &mail.Command{
		MailID: id + "-" + mail.KindSignin, Kind: mail.KindSignin, PracticeID: "acme",
		To:     events.Client{ID: "c-" + eventID, Email: email, Name: "Pat"},
		LinkID: id, Kid: "k1", Purpose: events.PurposeSignin, Scope: scope.Signin("acme", "c-"+eventID), MintEventID: eventID,
		ValidFrom: t0, ExpiresAt: t0.Add(24 * time.Hour), CauseEventID: eventID, At: t0,
	}, token
}

func (e *env) queue(t testing.TB, cmd *mail.Command) {
	t.Helper()
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailCommandPrefix+cmd.MailID, cmd.MailID, data, nil); err != nil {
		t.Fatal(err)
	}
}

func (e *env) sink(t testing.TB) *mailer.Sink {
	t.Helper()
	s, err := mailer.NewSink(storetest.MustOpen(t, "mailer"), e.clock)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs a mailer until the test ends.
func (e *env) start(t testing.TB, sender mailer.Sender, reg prometheus.Registerer, mods ...func(*mailer.Config)) *mailer.Mailer {
	t.Helper()
	cfg := mailer.Config{JS: e.js, Keys: e.keys, Practices: e.dir, Sender: sender, From: "links@acme.example",
		PublicURL: publicURL + "/", Clock: e.clock, Metrics: reg, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	for _, mod := range mods {
		mod(&cfg)
	}
	m, err := mailer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m
}

// drained reports whether the mailer consumer has nothing left to do.
func (e *env) drained(t testing.TB) bool {
	t.Helper()
	c, err := e.js.Consumer(ctx(t), bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}

func (e *env) lastEvent(t testing.TB, linkID, typ string) (*events.LinkEvent, bool) {
	t.Helper()
	var ev events.LinkEvent
	_, err := bus.NewReader(e.js, bus.StreamLinks).LastJSON(ctx(t), events.LinkSubject(linkID, typ), &ev)
	if errors.Is(err, bus.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return &ev, true
}

func (e *env) count(t testing.TB, stream, filter string) uint64 {
	t.Helper()
	subs, err := bus.NewReader(e.js, stream).Subjects(ctx(t), filter)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range subs {
		n += c
	}
	return n
}

func messages(t testing.TB, s *mailer.Sink) []mailer.SinkMessage {
	t.Helper()
	msgs, err := s.Messages(0)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func TestSigninEmailOnceWithItsLink(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	reg := prometheus.NewRegistry()
	e.start(t, sink, reg)
	cmd, token := e.signin(t, "evt-1", "pat@example.com")
	e.queue(t, cmd)

	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	msgs := messages(t, sink)
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	m := msgs[0]
	if m.To != "pat@example.com" || m.ReplyTo != "desk@acme.example" || m.From != `"Acme Therapy" <links@acme.example>` {
		t.Errorf("addresses: %+v", m)
	}
	if !strings.HasPrefix(m.Subject, "Your sign-in link for Acme Therapy (valid until Tue 24 Nov, 14:05 UTC)") {
		t.Errorf("subject %q", m.Subject)
	}
	if len(m.Links) != 1 || m.Links[0] != publicURL+"/l/"+token {
		t.Fatalf("links %v, want the token's", m.Links)
	}
	got, err := link.ID(strings.TrimPrefix(m.Links[0], publicURL+"/l/"))
	if err != nil || got != cmd.LinkID {
		t.Fatalf("link in the email maps to %q (%v), want %q", got, err, cmd.LinkID)
	}
	if m.Headers[mail.HeaderEntityRefID] != cmd.MailID || m.MailID != cmd.MailID {
		t.Errorf("headers %v", m.Headers)
	}
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeSent)
	if ev.MailID != cmd.MailID || ev.MessageID != m.MessageID || ev.MailKind != mail.KindSignin ||
		ev.ClientID != "c-evt-1" || ev.PracticeID != "acme" || ev.EventID != "sent-"+cmd.MailID {
		t.Errorf("sent event %+v", ev)
	}
	var done mailer.Done
	if _, err := bus.NewReader(e.js, bus.StreamMail).LastJSON(ctx(t), bus.MailDonePrefix+cmd.MailID, &done); err != nil {
		t.Fatalf("mail.done: %v", err)
	}
	if done.Status != mailer.StatusSent || done.MessageID != m.MessageID {
		t.Errorf("done %+v", done)
	}

	// Republished (the issuer replaying the action): MAIL keeps one command
	// per mail id.
	data, _ := json.Marshal(cmd)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailCommandPrefix+cmd.MailID, "other-msg-id", data, nil); !errors.Is(err, bus.ErrDuplicate) {
		t.Fatalf("republish: %v", err)
	}
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if v := counter(t, reg, "linkpipe_mailer_sent_total"); v != 1 {
		t.Errorf("sent_total %v", v)
	}
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				ok = ok && found
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestRedeliveryAfterDoneSendsNothing(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	reg := prometheus.NewRegistry()
	cmd, _ := e.signin(t, "evt-2", "pat@example.com")
	e.queue(t, cmd)
	func() {
		// A first mailer sends it, then stops.
		sub, cancel := context.WithCancel(context.Background())
		defer cancel()
		m, err := mailer.New(mailer.Config{JS: e.js, Keys: e.keys, Practices: e.dir, Sender: sink,
			From: "links@acme.example", PublicURL: publicURL, Clock: e.clock})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- m.Run(sub) }()
		eventually.True(t, 30*time.Second, func() bool { return len(messages(t, sink)) == 1 }, "the first email")
		eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	// The consumer is recreated (an operator reset, a lost ack...): every
	// command is delivered again.
	if err := e.js.DeleteConsumer(ctx(t), bus.StreamMail, bus.ConsumerMailer); err != nil {
		t.Fatal(err)
	}
	if err := bus.Setup(ctx(t), e.js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	e.start(t, sink, reg)
	eventually.True(t, 30*time.Second, func() bool { return counter(t, reg, "linkpipe_mailer_duplicates_total") == 1 }, "the redelivery to be handled")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if n := len(messages(t, sink)); n != 1 {
		t.Fatalf("%d emails after redelivery, want 1", n)
	}
	if n := e.count(t, bus.StreamLinks, events.LinkSubject(cmd.LinkID, events.TypeSent)); n != 1 {
		t.Fatalf("%d sent events, want 1", n)
	}
}

func TestCrashBetweenDoneAndEventRepublishesTheEvent(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	cmd, _ := e.signin(t, "evt-3", "pat@example.com")
	// The state a crash right after mail.done leaves behind.
	done := mailer.Done{MailID: cmd.MailID, Kind: cmd.Kind, LinkID: cmd.LinkID, PracticeID: "acme",
		ClientID: cmd.To.ID, Purpose: cmd.Purpose, Status: mailer.StatusSent, MessageID: "ses-42", At: t0}
	data, _ := json.Marshal(done)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailDonePrefix+cmd.MailID, "done-"+cmd.MailID, data, nil); err != nil {
		t.Fatal(err)
	}
	e.queue(t, cmd)
	e.start(t, sink, nil)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeSent)
	if ev.MessageID != "ses-42" {
		t.Errorf("event %+v", ev)
	}
	if n := len(messages(t, sink)); n != 0 {
		t.Fatalf("%d emails, want 0 (it was sent before the crash)", n)
	}
}

func TestSendsThroughAWSSESV2Local(t *testing.T) {
	local := sestest.StartLocal(t)
	e := newEnv(t)
	sender, err := ses.New(ctx(t), local.Options())
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, sender, nil)
	cmd, token := e.signin(t, "evt-ses", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	emails := local.Emails(t)
	if len(emails) != 1 {
		t.Fatalf("%d emails in /store, want 1", len(emails))
	}
	em := emails[0]
	if em.Destination.To[0] != "pat@example.com" || em.ReplyTo[0] != "desk@acme.example" || em.From != `"Acme Therapy" <links@acme.example>` {
		t.Errorf("addresses %+v", em)
	}
	if !strings.HasPrefix(em.Subject, "Your sign-in link for Acme Therapy") ||
		!strings.Contains(em.Body.Text, publicURL+"/l/"+token) || !strings.Contains(em.Body.HTML, publicURL+"/l/"+token) {
		t.Errorf("content %q\n%s", em.Subject, em.Body.Text)
	}
	if em.Header(mail.HeaderEntityRefID) != cmd.MailID {
		t.Errorf("headers %v", em.Headers)
	}
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeSent)
	if ev.MessageID != em.MessageID {
		t.Errorf("event message id %q, SES stored %q", ev.MessageID, em.MessageID)
	}
}

func TestTransientFailuresAreRetriedUntilOneEmail(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t, sestest.Internal, sestest.Throttled, sestest.Bare500)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.start(t, sender, reg)
	cmd, _ := e.signin(t, "evt-retry", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if n := len(fake.Accepted()); n != 1 || fake.Attempts() != 4 {
		t.Fatalf("%d accepted after %d attempts, want 1 after 4", n, fake.Attempts())
	}
	if n := e.count(t, bus.StreamLinks, events.LinkSubject(cmd.LinkID, events.TypeSent)); n != 1 {
		t.Fatalf("%d sent events, want 1", n)
	}
	// The first transient failure is reported, not as permanent.
	fev, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
	if !ok || fev.Permanent || !strings.Contains(fev.Reason, "will retry") {
		t.Errorf("transient failure event %+v", fev)
	}
	if n := e.count(t, bus.StreamLinks, events.LinkSubject(cmd.LinkID, events.TypeFailed)); n != 1 {
		t.Errorf("%d failed events, want 1", n)
	}
	if v := counter(t, reg, "linkpipe_mailer_failed_total", "permanent", "false"); v != 3 {
		t.Errorf("failed_total{permanent=false} = %v, want 3", v)
	}
	if v := counter(t, reg, "linkpipe_mailer_sent_total"); v != 1 {
		t.Errorf("sent_total = %v", v)
	}
}

func TestRejectedAddressFailsPermanentlyOnce(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t)
	fake.FailTo("bounce@example.com", sestest.Rejected)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.start(t, sender, reg)
	cmd, _ := e.signin(t, "evt-bounce", "bounce@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed); return ok }, "the failed event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
	if !ev.Permanent || !strings.Contains(ev.Reason, "suppression list") || ev.MailID != cmd.MailID {
		t.Errorf("failed event %+v", ev)
	}
	if fake.Attempts() != 1 {
		t.Errorf("%d attempts, want 1 (no retry loop)", fake.Attempts())
	}
	if _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); ok {
		t.Error("sent event for a rejected email")
	}
	var done mailer.Done
	if _, err := bus.NewReader(e.js, bus.StreamMail).LastJSON(ctx(t), bus.MailDonePrefix+cmd.MailID, &done); err != nil || done.Status != mailer.StatusFailed {
		t.Errorf("done %+v %v", done, err)
	}
	if v := counter(t, reg, "linkpipe_mailer_failed_total", "permanent", "true"); v != 1 {
		t.Errorf("failed_total{permanent=true} = %v", v)
	}
	e.deadLetter(t, cmd, "suppression list")
}

// deadLetter checks that cmd, given up, is on deadletter.mail, once, with a
// reason that says want, and returns the dead letter.
func (e *env) deadLetter(t testing.TB, cmd *mail.Command, want string) *jetstream.RawStreamMsg {
	t.Helper()
	var dl *jetstream.RawStreamMsg
	eventually.True(t, 30*time.Second, func() bool {
		m, err := bus.NewReader(e.js, bus.StreamDeadLetter).Last(ctx(t), bus.DeadLetterPrefix+"mail")
		if err == nil {
			dl = m
		}
		return err == nil
	}, "the dead letter")
	if n := e.count(t, bus.StreamDeadLetter, bus.DeadLetterPrefix+"mail"); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
	if got := dl.Header.Get(bus.HeaderSource); got != bus.MailCommandPrefix+cmd.MailID {
		t.Errorf("dead letter source %q", got)
	}
	if r := dl.Header.Get(bus.HeaderReason); !strings.Contains(r, want) || strings.Contains(r, "@") {
		t.Errorf("dead letter reason %q, want it to say %q and name no address", r, want)
	}
	var got mail.Command
	if err := json.Unmarshal(dl.Data, &got); err != nil || got.MailID != cmd.MailID {
		t.Errorf("dead letter is not the command: %v %s", err, dl.Data)
	}
	return dl
}

func TestExpiredLinkIsNotSent(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	e.start(t, sink, nil)
	cmd, _ := e.signin(t, "evt-late", "pat@example.com")
	e.clock.Set(cmd.ExpiresAt.Add(time.Second))
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed); return ok }, "the failed event")
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
	if !ev.Permanent || !strings.Contains(ev.Reason, "expired") {
		t.Errorf("event %+v", ev)
	}
	if n := len(messages(t, sink)); n != 0 {
		t.Errorf("%d emails for an expired link", n)
	}
	e.deadLetter(t, cmd, "expired")
}

// An email that keeps failing ends after its attempt budget: one
// permanent .failed and a dead letter saying why, and no more sends.
func TestAttemptBudgetEndsTheEmail(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t)
	fake.Always(sestest.Internal)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.start(t, sender, reg, func(c *mailer.Config) { c.MaxAttempts = 3 })
	cmd, _ := e.signin(t, "evt-budget", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool {
		ev, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
		return ok && ev.Permanent
	}, "the permanent failed event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	ev, _ := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
	if !strings.Contains(ev.Reason, "not sent after 3 attempts") || !strings.Contains(ev.Reason, "InternalServiceError") {
		t.Errorf("reason %q", ev.Reason)
	}
	if n := fake.Attempts(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	e.deadLetter(t, cmd, "not sent after 3 attempts")
	// One "will retry" and one final event.
	if n := e.count(t, bus.StreamLinks, events.LinkSubject(cmd.LinkID, events.TypeFailed)); n != 2 {
		t.Errorf("%d failed events, want 2", n)
	}
	if v := counter(t, reg, "linkpipe_mailer_failed_total", "permanent", "true"); v != 1 {
		t.Errorf("failed_total{permanent=true} = %v", v)
	}
}

// A command delivered past the budget (its sends never failed: here the
// key it needs is missing, so it is never sent) ends too.
func TestRedeliveriesPastTheBudgetEndTheEmail(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	e.start(t, sink, nil, func(c *mailer.Config) {
		c.MaxAttempts = 2
		c.Keys = link.NewKeyring("k9", make([]byte, 32)) // not the key the command names
	})
	cmd, _ := e.signin(t, "evt-nokey", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool {
		ev, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed)
		return ok && ev.Permanent
	}, "the permanent failed event")
	e.deadLetter(t, cmd, "not sent after 2 attempts")
	if n := len(messages(t, sink)); n != 0 {
		t.Errorf("%d emails", n)
	}
}

// Throttling is retried without telling anyone the email failed.
func TestThrottlingPublishesNoFailedEvent(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t, sestest.Throttled, sestest.Throttled.In(sestest.InType), sestest.Throttled.In(sestest.InCode))
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, sender, nil)
	cmd, _ := e.signin(t, "evt-throttled", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if n := fake.Attempts(); n != 4 {
		t.Errorf("%d attempts, want 4", n)
	}
	if n := e.count(t, bus.StreamLinks, events.LinkSubject(cmd.LinkID, events.TypeFailed)); n != 0 {
		t.Errorf("%d failed events for throttling, want 0", n)
	}
}

// An email without a link (an in-person appointment's confirmation)
// reports its outcome under its mail id, sent or failed for good.
func TestEmailWithoutLinkPublishesItsOutcome(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t)
	fake.FailTo("gone@example.com", sestest.Rejected)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, sender, nil)
	starts := t0.Add(48 * time.Hour)
	inPerson := func(eventID, email string) *mail.Command {
		return &mail.Command{
			MailID: mail.EventMailID("acme", eventID, mail.KindAppointmentConfirmed), Kind: mail.KindAppointmentConfirmed,
			PracticeID: "acme", To: events.Client{ID: "c-" + eventID, Email: email, Name: "Pat"},
			Appointment:  &events.Appointment{ID: "appt-" + eventID, StartsAt: &starts, ClinicianName: "Dr. Lee"},
			CauseEventID: eventID, At: t0,
		}
	}
	ok, bad := inPerson("evt-inperson", "pat@example.com"), inPerson("evt-inperson-gone", "gone@example.com")
	e.queue(t, ok)
	e.queue(t, bad)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, ok.MailID, events.TypeSent); return ok }, "the sent event")
	ev, _ := e.lastEvent(t, ok.MailID, events.TypeSent)
	if ev.LinkID != ok.MailID || ev.MailID != ok.MailID || ev.AppointmentID != "appt-evt-inperson" || ev.ClientID != "c-evt-inperson" || ev.MessageID == "" {
		t.Errorf("sent event %+v", ev)
	}
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, bad.MailID, events.TypeFailed); return ok }, "the failed event")
	fev, _ := e.lastEvent(t, bad.MailID, events.TypeFailed)
	if !fev.Permanent || fev.AppointmentID != "appt-evt-inperson-gone" {
		t.Errorf("failed event %+v", fev)
	}
	e.deadLetter(t, bad, "suppression list")
}

func TestWrongKeyNeverSendsABrokenLink(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	other := link.NewKeyring("k1", make([]byte, 32)) // same kid, different secret
	e.start(t, sink, nil, func(c *mailer.Config) { c.Keys = other })
	cmd, _ := e.signin(t, "evt-key", "pat@example.com")
	e.queue(t, cmd)
	c, err := e.js.Consumer(ctx(t), bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, func() bool {
		msg, err := c.Info(ctx(t))
		return err == nil && msg.NumRedelivered+msg.NumAckPending > 0 && msg.Delivered.Consumer >= 2
	}, "a redelivery")
	if n := len(messages(t, sink)); n != 0 {
		t.Fatalf("%d emails sent with a token that does not match the link", n)
	}
	if _, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed); ok {
		t.Error("a key mismatch is the operator's to fix, not a failure of the email")
	}
}

func TestPoisonCommandIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	sink := e.sink(t)
	reg := prometheus.NewRegistry()
	e.start(t, sink, reg)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailCommandPrefix+"junk", "junk", []byte("{not json"), nil); err != nil {
		t.Fatal(err)
	}
	cmd, _ := e.signin(t, "evt-after", "pat@example.com")
	cmd.MailID = "mismatch" // subject and mail id disagree
	data, _ := json.Marshal(cmd)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailCommandPrefix+"other", "other", data, nil); err != nil {
		t.Fatal(err)
	}
	// A link id that is no id (it would name the subject of the
	// command's lifecycle events), on a kind that re-derives no token.
	bad, _ := e.signin(t, "evt-badlink", "pat@example.com")
	bad.MailID, bad.Kind, bad.LinkID = "badlink", "appointment_canceled", "a.b"
	data, _ = json.Marshal(bad)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailCommandPrefix+"badlink", "badlink", data, nil); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, func() bool { return e.count(t, bus.StreamDeadLetter, bus.DeadLetterPrefix+"mail") == 3 }, "three dead letters")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if v := counter(t, reg, "linkpipe_mailer_poison_total"); v != 3 {
		t.Errorf("poison_total %v", v)
	}
	if n := len(messages(t, sink)); n != 0 {
		t.Errorf("%d emails", n)
	}
}

// countingSender counts sends per mail id; it can be slow.
type countingSender struct {
	mu    sync.Mutex
	sends map[string]int
	delay time.Duration
	total atomic.Int64
	busy  atomic.Int64
}

func (c *countingSender) Send(ctx context.Context, m *mail.Message) (string, error) {
	c.busy.Add(1)
	defer c.busy.Add(-1)
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sends == nil {
		c.sends = map[string]int{}
	}
	c.sends[m.Headers[mail.HeaderMailID]]++
	n := c.total.Add(1)
	return fmt.Sprintf("count-%d", n), nil
}

func TestTwoReplicasSendEachMailOnce(t *testing.T) {
	e := newEnv(t)
	a, b := e.sink(t), e.sink(t)
	e.start(t, a, nil, func(c *mailer.Config) { c.Concurrency = 4 })
	e.start(t, b, nil, func(c *mailer.Config) { c.Concurrency = 4 })
	const n = 100
	want := map[string]bool{}
	for i := range n {
		cmd, _ := e.signin(t, fmt.Sprintf("evt-%03d", i), fmt.Sprintf("client%03d@example.com", i))
		want[cmd.MailID] = true
		e.queue(t, cmd)
	}
	eventually.True(t, 30*time.Second, func() bool { return len(messages(t, a))+len(messages(t, b)) >= n }, "100 emails")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	seen := map[string]int{}
	ma, mb := messages(t, a), messages(t, b)
	for _, m := range append(ma, mb...) {
		seen[m.MailID]++
	}
	if len(ma)+len(mb) != n || len(seen) != n {
		t.Fatalf("%d+%d emails for %d distinct mail ids, want %d", len(ma), len(mb), len(seen), n)
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s sent %d times", id, seen[id])
		}
	}
	if n := e.count(t, bus.StreamLinks, "links.*.sent"); n != 100 {
		t.Errorf("%d sent events", n)
	}
	t.Logf("replica A sent %d, replica B sent %d", len(ma), len(mb))
}

func TestSlowSendKeepsTheMessage(t *testing.T) {
	e := newEnv(t)
	// A short ack timeout: without InProgress, the other replica would get
	// the message while the first is still sending.
	c, err := e.js.Consumer(ctx(t), bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	cfg.AckWait = 2 * time.Second // keep-alive every ~670ms: margin on a loaded machine
	if _, err := e.js.UpdateConsumer(ctx(t), bus.StreamMail, cfg); err != nil {
		t.Fatal(err)
	}
	sender := &countingSender{delay: 5 * time.Second} // 2.5 AckWaits
	e.start(t, sender, nil)
	e.start(t, sender, nil)
	cmd, _ := e.signin(t, "evt-slow", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	eventually.True(t, 30*time.Second, func() bool { return sender.busy.Load() == 0 }, "no send in flight")
	sender.mu.Lock()
	defer sender.mu.Unlock()
	if sender.sends[cmd.MailID] != 1 {
		t.Fatalf("sent %d times, want 1", sender.sends[cmd.MailID])
	}
}

// Ready turns false only after RefusalsNotReady wholesale refusals in a
// row; throttling and 5xx say nothing about it; one send SES answers about
// the email itself (accepted, or refused for that email only) ends it.
func TestReadyOnlyWhileEverySendIsRefused(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := e.start(t, sender, reg, func(c *mailer.Config) { c.RetryMax = 20 * time.Millisecond })
	if err := m.Ready(ctx(t)); err != nil {
		t.Fatalf("at start: %v", err)
	}
	refusals := make([]sestest.Fault, 0, mailer.RefusalsNotReady+2)
	for range mailer.RefusalsNotReady - 1 {
		refusals = append(refusals, sestest.Suspended)
	}
	// A throttle and a 5xx in between neither count nor reset.
	refusals = append(refusals, sestest.Throttled, sestest.Internal, sestest.DomainUnproved.In(sestest.InCode))
	fake.Script(refusals...)
	fake.FailTo("gone@example.com", sestest.Rejected)
	cmd, _ := e.signin(t, "evt-ready", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { return fake.Attempts() >= len(refusals) }, "the scripted refusals")
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	if err := m.Ready(ctx(t)); err != nil {
		t.Errorf("after a send went through: %v", err)
	}
	// Refused wholesale again, then a refusal of one email: ready again.
	fake.FailTo("paused@example.com", sestest.SendingPaused)
	var paused []*mail.Command
	for i := range mailer.RefusalsNotReady {
		c, _ := e.signin(t, fmt.Sprintf("evt-paused-%d", i), "paused@example.com")
		e.queue(t, c)
		paused = append(paused, c)
	}
	eventually.True(t, 30*time.Second, func() bool { return errors.Is(m.Ready(ctx(t)), mailer.ErrProviderRefusing) }, "not ready")
	if v := gauge(t, reg, "linkpipe_mailer_provider_refusing"); v != 1 {
		t.Errorf("linkpipe_mailer_provider_refusing %v, want 1", v)
	}
	fake.FailTo("paused@example.com", sestest.Rejected)
	for _, c := range paused {
		eventually.True(t, 30*time.Second, func() bool {
			ev, ok := e.lastEvent(t, c.LinkID, events.TypeFailed)
			return ok && ev.Permanent
		}, "the rejection")
	}
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if err := m.Ready(ctx(t)); err != nil {
		t.Errorf("after SES judged an email itself: %v", err)
	}
	if v := gauge(t, reg, "linkpipe_mailer_provider_refusing"); v != 0 {
		t.Errorf("linkpipe_mailer_provider_refusing %v, want 0", v)
	}
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// A nats-server killed without a clean shutdown forgets its consumers'
// last deliveries, so once back it delivers a command again, with the same
// delivery count, while the copy it delivered before is still buffered or
// being sent by a mailer. Only one copy claims the delivery
// (mail.sending.<mail_id>.<delivery>); the other sends nothing, comes back
// after the claim wait, and finds mail.done (the finding "7 duplicates
// when nats-server is killed for 2 s").
func TestACopyOfAClaimedDeliveryIsNotSent(t *testing.T) {
	e := newEnv(t)
	sender := &countingSender{}
	reg := prometheus.NewRegistry()
	cmd, _ := e.signin(t, "evt-claimed", "pat@example.com")
	// The other copy of delivery 1 claimed it and is sending.
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailSendingPrefix+cmd.MailID+".1", "elsewhere", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	e.queue(t, cmd)
	var logs syncbuf.Buffer
	e.start(t, sender, reg, func(c *mailer.Config) {
		c.SendTimeout = time.Second
		c.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	eventually.True(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "another copy of this delivery is being sent") },
		"the mailer to find the delivery claimed")
	// The other copy has sent: its done marker.
	done := mailer.Done{MailID: cmd.MailID, Kind: cmd.Kind, LinkID: cmd.LinkID, PracticeID: cmd.PracticeID,
		ClientID: cmd.To.ID, Purpose: cmd.Purpose, Status: mailer.StatusSent, MessageID: "elsewhere-1", At: t0}
	data, _ := json.Marshal(&done)
	if _, err := bus.PublishOnce(ctx(t), e.js, bus.MailDonePrefix+cmd.MailID, "done-"+cmd.MailID, data, nil); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 40*time.Second, func() bool { return counter(t, reg, "linkpipe_mailer_duplicates_total") == 1 }, "the command to be found done")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	if n := sender.total.Load(); n != 0 {
		t.Fatalf("%d emails sent for a delivery another copy had claimed", n)
	}
	if _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); !ok {
		t.Error("no sent event")
	}
}

// Every delivery has its own claim: a retry after a failed send is not
// held back by the first delivery's claim.
func TestEachDeliveryClaimsItself(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t, sestest.Internal)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := e.signin(t, "evt-claims", "pat@example.com")
	e.queue(t, cmd)
	e.start(t, sender, nil)
	eventually.True(t, 30*time.Second, func() bool { return len(fake.Accepted()) == 1 && e.drained(t) }, "the email on the second delivery")
	subs, err := bus.NewReader(e.js, bus.StreamMail).Subjects(ctx(t), bus.MailSendingPrefix+cmd.MailID+".>")
	if err != nil || len(subs) != 2 || subs[bus.MailSendingPrefix+cmd.MailID+".1"] != 1 || subs[bus.MailSendingPrefix+cmd.MailID+".2"] != 1 {
		t.Fatalf("claims %v (%v), want deliveries 1 and 2", subs, err)
	}
}
