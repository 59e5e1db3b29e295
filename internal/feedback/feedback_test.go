package feedback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/feedback"
	"github.com/linkpipe/linkpipe/internal/feedback/sqstest"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/sentmail"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

var t0 = time.Date(2026, 11, 23, 14, 5, 0, 0, time.UTC)

// The documentation samples' message ids and addresses, replaced by the
// test's.
const (
	docMessageIDEvent = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
	docAddressEvent   = "recipient@example.com"
)

var docNotification = map[string]struct{ messageID, address string }{
	"notification-bounce.json":    {"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000", "jane@example.com"},
	"notification-complaint.json": {"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000", "richard@example.com"},
	"notification-delivery.json":  {"0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000", "jane@example.com"},
}

// sesLike is a Sender that answers SES-shaped message ids.
type sesLike struct {
	mu sync.Mutex
	n  int
	to []string
}

func (s *sesLike) Send(_ context.Context, m *mail.Message) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.to = append(s.to, m.To)
	return fmt.Sprintf("0100018c%08x-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", s.n), nil
}

func (s *sesLike) sentTo() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.to...)
}

type env struct {
	t      testing.TB
	ctx    context.Context
	js     jetstream.JetStream
	keys   *link.Keyring
	queue  *sqstest.Queue
	sender *sesLike
	reg    *prometheus.Registry
	n      int
}

// newEnv runs a mailer (with an SES-like sender) and a feedback consumer
// whose real SQS client polls an sqstest queue.
func newEnv(t testing.TB, mods ...func(*feedback.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	dir, err := practice.Open(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i + 7)
	}
	e := &env{t: t, ctx: ctx, js: js, keys: link.NewKeyring("k1", key), queue: sqstest.Start(t), sender: &sesLike{},
		reg: prometheus.NewRegistry()}
	m, err := mailer.New(mailer.Config{JS: js, Keys: e.keys, Practices: dir, Sender: e.sender, From: "links@acme.example",
		PublicURL: "https://links.acme.example", Clock: clock.NewFake(t0), RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	client := sqs.New(sqs.Options{}, e.queue.Options())
	cfg := feedback.Config{JS: js, Queue: client, QueueURL: e.queue.URL, WaitTime: time.Second, RetryDelay: time.Second,
		Metrics: e.reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, mod := range mods {
		mod(&cfg)
	}
	fc, err := feedback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{m.Run, fc.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	return e
}

// email has the mailer send a sign-in email to address and returns its
// command and SES message id.
func (e *env) email(address string) (*mail.Command, string) {
	e.t.Helper()
	e.n++
	eventID := fmt.Sprintf("evt-%d", e.n)
	client := fmt.Sprintf("c-%d", e.n)
	token, err := e.keys.Mint("k1", events.PurposeSignin, scope.Signin("acme", client), eventID)
	if err != nil {
		e.t.Fatal(err)
	}
	id, _ := link.ID(token)
	to := events.Client{ID: client, Email: address, Name: "Pat"}
	if err := recipient.NewBook(e.js).Put(e.ctx, id, to); err != nil {
		e.t.Fatal(err)
	}
	cmd := &mail.Command{MailID: mail.LinkMailID(id, mail.KindSignin), Kind: mail.KindSignin, PracticeID: "acme", To: to,
		LinkID: id, Kid: "k1", Purpose: events.PurposeSignin, Scope: scope.Signin("acme", client), MintEventID: eventID,
		ValidFrom: t0, ExpiresAt: t0.Add(24 * time.Hour), CauseEventID: eventID, At: t0}
	if err := mail.Queue(e.ctx, e.js, cmd); err != nil {
		e.t.Fatal(err)
	}
	var ev *events.LinkEvent
	eventually.True(e.t, 30*time.Second, func() bool {
		var ok bool
		ev, ok = e.last(cmd.LinkID, events.TypeSent)
		if !ok {
			ev, ok = e.last(cmd.LinkID, events.TypeFailed)
		}
		return ok
	}, "the email's outcome")
	return cmd, ev.MessageID
}

func (e *env) last(linkID, typ string) (*events.LinkEvent, bool) {
	e.t.Helper()
	var ev events.LinkEvent
	_, err := bus.NewReader(e.js, bus.StreamLinks).LastJSON(e.ctx, events.LinkSubject(linkID, typ), &ev)
	if errors.Is(err, bus.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return &ev, true
}

func (e *env) waitEvent(linkID, typ string) *events.LinkEvent {
	e.t.Helper()
	var ev *events.LinkEvent
	eventually.True(e.t, 30*time.Second, func() bool {
		var ok bool
		ev, ok = e.last(linkID, typ)
		return ok
	}, "links."+linkID+"."+typ)
	return ev
}

// sample reads a documentation sample with its message id and address
// replaced.
func sample(t testing.TB, name, messageID, address string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	oldID, oldAddr := docMessageIDEvent, docAddressEvent
	if n, ok := docNotification[name]; ok {
		oldID, oldAddr = n.messageID, n.address
	}
	s := strings.ReplaceAll(string(data), oldID, messageID)
	return strings.ReplaceAll(s, oldAddr, address)
}

// wrap puts an SES event in the documentation's SNS notification, as SNS
// delivers it to SQS without raw message delivery.
func wrap(t testing.TB, event string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "sns-notification.json"))
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	env["Message"] = event
	env["Subject"] = "Amazon SES Email Event Notification"
	out, _ := json.Marshal(env)
	return string(out)
}

// drained waits until the queue holds nothing.
func (e *env) drained() {
	e.t.Helper()
	eventually.True(e.t, 30*time.Second, func() bool { return e.queue.Len() == 0 }, "the queue to be empty")
}

// deadLetters returns the reasons on deadletter.feedback.
func (e *env) deadLetters() []string {
	e.t.Helper()
	s, err := e.js.Stream(e.ctx, bus.StreamDeadLetter)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := s.OrderedConsumer(e.ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.DeadLetterPrefix + feedback.DeadLetterSource}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, m.Headers().Get(bus.HeaderReason))
		}
		if n == 0 {
			return out
		}
	}
}

// TestPermanentBounceSuppressesTheAddress: an SNS-wrapped Bounce event
// (event publishing, AWS's sample) about an email linkpipe sent becomes
// links.<id>.bounced (permanent, subtype and diagnostic), suppresses the
// address for every later email (failed, permanent, "suppressed: ..."),
// and is deleted from the queue only then.
func TestPermanentBounceSuppressesTheAddress(t *testing.T) {
	e := newEnv(t)
	cmd, msgID := e.email("pat@example.com")
	e.queue.Send(wrap(t, sample(t, "event-bounce.json", msgID, "pat@example.com")))
	ev := e.waitEvent(cmd.LinkID, events.TypeBounced)
	if ev.Reason != events.BouncePermanent || ev.Detail != "General: smtp; 550 5.1.1 user unknown" ||
		ev.MessageID != msgID || ev.MailID != cmd.MailID || ev.ClientID != cmd.To.ID || ev.PracticeID != "acme" ||
		!ev.At.Equal(time.Date(2017, 8, 5, 0, 41, 2, 669e6, time.UTC)) {
		t.Errorf("bounced event %+v", ev)
	}
	e.drained()
	entry, ok, err := suppress.NewList(e.js).Check(e.ctx, "PAT@example.com")
	if err != nil || !ok || entry.Cause != suppress.CauseBounce || entry.LinkID != cmd.LinkID || entry.MessageID != msgID {
		t.Fatalf("suppression %+v %v %v", entry, ok, err)
	}
	// The next email to that address is not sent.
	before := len(e.sender.sentTo())
	next, _ := e.email("pat@example.com")
	failed := e.waitEvent(next.LinkID, events.TypeFailed)
	if !failed.Permanent || !strings.HasPrefix(failed.Reason, "suppressed") || len(e.sender.sentTo()) != before {
		t.Fatalf("email to a suppressed address: %+v, %d sends", failed, len(e.sender.sentTo())-before)
	}
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}

	// Lifted, then the same SQS message delivered again: still lifted.
	list := suppress.NewList(e.js)
	if lifted, err := list.Lift(e.ctx, "pat@example.com", "unsup-1", "acme", t0); !lifted || err != nil {
		t.Fatalf("lift: %v %v", lifted, err)
	}
	e.queue.Send(wrap(t, sample(t, "event-bounce.json", msgID, "pat@example.com")))
	e.drained()
	if _, ok, _ := list.Check(e.ctx, "pat@example.com"); ok {
		t.Fatal("a redelivered bounce suppressed a lifted address again")
	}
}

// TestEveryFormIsUnderstood: AWS's samples of both forms (event publishing
// and identity notifications), SNS-wrapped and raw, each become their
// lifecycle event; complaints suppress, deliveries do not.
func TestEveryFormIsUnderstood(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		file, typ  string
		suppresses bool
	}{
		{"event-delivery.json", events.TypeDelivered, false},
		{"event-complaint.json", events.TypeComplained, true},
		{"notification-delivery.json", events.TypeDelivered, false},
		{"notification-bounce.json", events.TypeBounced, true},
		{"notification-complaint.json", events.TypeComplained, true},
	} {
		for _, raw := range []bool{false, true} {
			addr := fmt.Sprintf("client%d@example.net", e.n+1)
			cmd, msgID := e.email(addr)
			body := sample(t, c.file, msgID, addr)
			if !raw {
				body = wrap(t, body)
			}
			e.queue.Send(body)
			ev := e.waitEvent(cmd.LinkID, c.typ)
			if ev.MessageID != msgID || ev.MailID != cmd.MailID || strings.Contains(ev.Detail, "@") {
				t.Errorf("%s raw=%v: event %+v", c.file, raw, ev)
			}
			e.drained()
			if _, ok, _ := suppress.NewList(e.js).Check(e.ctx, addr); ok != c.suppresses {
				t.Errorf("%s raw=%v: suppressed=%v, want %v", c.file, raw, ok, c.suppresses)
			}
		}
	}
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}

// TestUnusableMessagesAreDeadLetteredAndDeleted: a malformed message, an
// SNS subscription confirmation, an event type linkpipe does not use and
// an event about an email linkpipe never sent each go to
// deadletter.feedback with a reason and leave the queue; an event about
// a known email that follows them is still applied (nothing blocks). A
// Send event is deleted without a dead letter.
func TestUnusableMessagesAreDeadLetteredAndDeleted(t *testing.T) {
	e := newEnv(t, func(c *feedback.Config) { c.UnmatchedReceives = 2 })
	cmd, msgID := e.email("sam@example.com")
	confirmation, err := os.ReadFile(filepath.Join("testdata", "sns-subscription-confirmation.json"))
	if err != nil {
		t.Fatal(err)
	}
	unmatched := e.queue.Send(wrap(t, sample(t, "event-bounce.json", "0100018cffffffff-unknown-000000", "who@example.com")))
	for _, body := range []string{
		"this is not JSON",
		string(confirmation),
		wrap(t, sample(t, "event-reject.json", msgID, "sam@example.com")),
		wrap(t, `{"mail":{"messageId":"x"}}`),
		wrap(t, sample(t, "event-send.json", msgID, "sam@example.com")),
		wrap(t, sample(t, "event-delivery.json", msgID, "sam@example.com")),
	} {
		e.queue.Send(body)
	}
	e.waitEvent(cmd.LinkID, events.TypeDelivered)
	e.drained()
	if n := e.queue.Receives(unmatched); n != -1 {
		t.Fatalf("unmatched message still queued after %d receives", n)
	}
	got := strings.Join(e.deadLetters(), "\n")
	for _, want := range []string{"not JSON", `SNS message of type "SubscriptionConfirmation"`, `SES event type "Reject"`,
		"neither eventType nor notificationType", "matches no email linkpipe sent"} {
		if !strings.Contains(got, want) {
			t.Errorf("dead-letter reasons lack %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 5 {
		t.Errorf("%d dead letters, want 5:\n%s", n, got)
	}
	if strings.Contains(got, "@") {
		t.Errorf("a dead-letter reason names an address:\n%s", got)
	}
	if _, ok, _ := suppress.NewList(e.js).Check(e.ctx, "who@example.com"); ok {
		t.Error("an unmatched bounce suppressed its address")
	}
}

// TestMatchedByTagWithoutRecord: an event whose message id is not on
// record (the record expired, or was never written) is matched by its
// linkpipe_mail tag.
func TestMatchedByTagWithoutRecord(t *testing.T) {
	e := newEnv(t)
	cmd, msgID := e.email("lee@example.com")
	e.forgetMessageID(msgID) // the crash window between mail.done and the message-id record
	ev := sample(t, "event-complaint.json", msgID, "lee@example.com")
	ev = strings.Replace(ev, `"tags":{`, `"tags":{"linkpipe_mail":["`+cmd.MailID+`"],"linkpipe_link":["`+cmd.LinkID+`"],`, 1)
	e.queue.Send(wrap(t, ev))
	got := e.waitEvent(cmd.LinkID, events.TypeComplained)
	if got.MailID != cmd.MailID || got.Detail != "abuse" {
		t.Fatalf("complained %+v", got)
	}
	e.drained()
	if _, ok, _ := suppress.NewList(e.js).Check(e.ctx, "lee@example.com"); !ok {
		t.Fatal("complaint matched by tag did not suppress")
	}
}

// forgetMessageID deletes the message-id record of an email, as if the
// mailer had stopped between mail.done and that record.
func (e *env) forgetMessageID(msgID string) {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.ctx, bus.BucketMessages)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kv.Get(e.ctx, msgID); err != nil {
		e.t.Fatalf("message-id record %s: %v", msgID, err)
	}
	if err := kv.Purge(e.ctx, msgID); err != nil {
		e.t.Fatal(err)
	}
}

// A forged event matched by its linkpipe_mail tag (anyone who can send to
// the queue and has seen a mail id in an email's headers) suppresses at
// most the address that email went to, never an address the event lists;
// and one whose message id is not the one SES gave that email matches
// nothing (found by review: a forged bounce listing thousands of addresses
// suppressed every one of them, deployment-wide).
func TestForgedTagMatchedEventSuppressesNoOtherAddress(t *testing.T) {
	e := newEnv(t)
	cmd, msgID := e.email("lee@example.com")
	e.forgetMessageID(msgID)
	forged := func(messageID string) string {
		ev := sample(t, "event-complaint.json", messageID, "lee@example.com")
		ev = strings.Replace(ev, `"tags":{`, `"tags":{"linkpipe_mail":["`+cmd.MailID+`"],`, 1)
		return strings.Replace(ev, `"complainedRecipients":[`, `"complainedRecipients":[{"emailAddress":"victim@example.com"},`, 1)
	}
	suppressed := func(address string) bool {
		_, ok, err := suppress.NewList(e.js).Check(e.ctx, address)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	// Another message id than SES gave the email: not this email.
	e.queue.Send(wrap(t, forged("0100018c-forged-0000000000")))
	e.drained()
	if _, ok := e.last(cmd.LinkID, events.TypeComplained); ok {
		t.Fatal("an event with another message id was taken as the email's complaint")
	}
	if suppressed("victim@example.com") || suppressed("lee@example.com") {
		t.Fatal("an event with another message id suppressed an address")
	}
	if dl := strings.Join(e.deadLetters(), "\n"); !strings.Contains(dl, cmd.MailID) {
		t.Fatalf("dead letters %q do not name the mismatched mail", dl)
	}

	// Its own message id: the email's own address only.
	e.queue.Send(wrap(t, forged(msgID)))
	e.waitEvent(cmd.LinkID, events.TypeComplained)
	e.drained()
	if suppressed("victim@example.com") {
		t.Fatal("an address the event listed, not the email's, was suppressed")
	}
	if !suppressed("lee@example.com") {
		t.Fatal("the email's own address was not suppressed")
	}
}

// TestQueueErrorsAndRedeliveries: SQS answering 500s does not stop the
// consumer, and the same event received twice publishes one event.
func TestQueueErrorsAndRedeliveries(t *testing.T) {
	e := newEnv(t)
	cmd, msgID := e.email("kim@example.com")
	e.queue.FailNext(2)
	body := wrap(t, sample(t, "event-delivery.json", msgID, "kim@example.com"))
	e.queue.Send(body)
	e.waitEvent(cmd.LinkID, events.TypeDelivered)
	e.drained()
	e.queue.Send(body) // SQS delivers at least once
	e.drained()
	subs, err := bus.NewReader(e.js, bus.StreamLinks).Subjects(e.ctx, events.LinkSubject(cmd.LinkID, events.TypeDelivered))
	if err != nil {
		t.Fatal(err)
	}
	if n := subs[events.LinkSubject(cmd.LinkID, events.TypeDelivered)]; n != 1 {
		t.Fatalf("%d delivered events, want 1", n)
	}
}

// TestTwoReplicasShareTheQueue: two consumers (two mailer replicas) poll
// one queue; every event is applied once and the queue drains.
func TestTwoReplicasShareTheQueue(t *testing.T) {
	e := newEnv(t)
	second, err := feedback.New(feedback.Config{JS: e.js, Queue: sqs.New(sqs.Options{}, e.queue.Options()), QueueURL: e.queue.URL,
		WaitTime: time.Second, RetryDelay: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- second.Run(runCtx) }()
	defer func() { stop(); <-done }()
	type sent struct {
		cmd   *mail.Command
		msgID string
	}
	var all []sent
	for i := range 12 {
		addr := fmt.Sprintf("r%d@example.org", i)
		cmd, msgID := e.email(addr)
		all = append(all, sent{cmd, msgID})
		e.queue.Send(wrap(t, sample(t, "event-delivery.json", msgID, addr)))
		e.queue.Send(sample(t, "event-complaint.json", msgID, addr))
	}
	e.drained()
	links := bus.NewReader(e.js, bus.StreamLinks)
	for _, s := range all {
		for _, typ := range []string{events.TypeDelivered, events.TypeComplained} {
			subj := events.LinkSubject(s.cmd.LinkID, typ)
			subs, err := links.Subjects(e.ctx, subj)
			if err != nil {
				t.Fatal(err)
			}
			if subs[subj] != 1 {
				t.Errorf("%s: %d events, want 1", subj, subs[subj])
			}
		}
	}
}

// BenchmarkDeliveryEvents: SNS-wrapped Delivery events, each about a
// different email (its record written as the mailer writes it), through
// the real SQS client and one consumer: matched, published, deleted. The
// figure is events applied per second by one replica (docs/performance.md).
func BenchmarkDeliveryEvents(b *testing.B) {
	e := newEnv(b)
	book := sentmail.NewBook(e.js)
	bodies := make([]string, b.N)
	for i := range b.N {
		msgID := fmt.Sprintf("0100018c%08x-bench-000000", i)
		link := fmt.Sprintf("Lbench%d", i)
		if err := book.Put(e.ctx, &sentmail.Record{MessageID: msgID, MailID: link + "-signin", Kind: mail.KindSignin, LinkID: link,
			PracticeID: "acme", ClientID: "c-1", Purpose: events.PurposeSignin, AddressHash: suppress.Hash("b@example.org")}); err != nil {
			b.Fatal(err)
		}
		bodies[i] = wrap(b, sample(b, "event-delivery.json", msgID, "b@example.org"))
	}
	b.ResetTimer()
	start := time.Now()
	for _, body := range bodies {
		e.queue.Send(body)
	}
	eventually.True(b, 5*time.Minute, func() bool { return e.queue.Len() == 0 }, "the queue to drain")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
