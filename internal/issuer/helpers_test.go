package issuer_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)

// env is one test's world: a real nats-server, the issuer's dependencies
// and, once started, a running Issuer.
type env struct {
	t       testing.TB
	ctx     context.Context
	srv     *bustest.Server
	js      jetstream.JetStream
	keys    *link.Keyring
	clk     *clock.Fake
	dir     *practice.Directory
	reg     *prometheus.Registry
	iss     *issuer.Issuer
	stop    func()
	scopesR *bus.Reader
	// mu guards scopeOf: event id -> scope subject of the actions
	// published (remember).
	mu      sync.Mutex
	scopeOf map[string]string
	links   *bus.Reader
	mail    *bus.Reader
	db      *bolt.DB
}

func testKeys() *link.Keyring {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i + 1)
	}
	return link.NewKeyring("k1", key)
}

// newEnv starts a server and builds (but does not run) an Issuer.
func newEnv(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	dir, err := practice.Open(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	e := &env{
		t: t, ctx: ctx, srv: srv, js: js, keys: testKeys(), clk: clock.NewFake(t0), dir: dir,
		scopesR: bus.NewReader(js, bus.StreamScopes),
		links:   bus.NewReader(js, bus.StreamLinks),
		mail:    bus.NewReader(js, bus.StreamMail),
	}
	e.db = storetest.MustOpen(t, "issuer", issuer.Buckets()...)
	e.iss, e.reg = e.newIssuer(e.db)
	return e
}

func (e *env) newIssuer(db *bolt.DB) (*issuer.Issuer, *prometheus.Registry) {
	e.t.Helper()
	return e.newIssuerConcurrency(db, 8)
}

// newIssuerConcurrency builds an Issuer on db; concurrency 0 is the default.
func (e *env) newIssuerConcurrency(db *bolt.DB, concurrency int) (*issuer.Issuer, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	iss, err := issuer.New(issuer.Config{
		JS: e.js, DB: db, Keys: e.keys, Practices: e.dir, Clock: e.clk, Metrics: reg, Concurrency: concurrency,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return iss, reg
}

// run runs iss until the returned stop is called (or the test ends).
func (e *env) run(iss *issuer.Issuer) (stop func()) {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- iss.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Errorf("Run did not return after its context ended")
		}
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) start() { e.stop = e.run(e.iss) }

func (e *env) publish(a events.Action) uint64 {
	e.t.Helper()
	e.remember(a)
	ack, err := events.Publish(e.ctx, e.js, a)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// publishRaw publishes bytes on subject with a message id.
func (e *env) publishRaw(subject, msgID string, data []byte) uint64 {
	e.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	ack, err := e.js.PublishMsg(e.ctx, msg)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

func (e *env) marshal(a events.Action) []byte {
	e.t.Helper()
	e.remember(a)
	data, err := json.Marshal(a)
	if err != nil {
		e.t.Fatal(err)
	}
	return data
}

// waitIdle waits until the issuer consumer has settled every action
// published so far (reminder schedules, which it does not consume, aside).
func (e *env) waitIdle() {
	e.t.Helper()
	s, err := e.js.Stream(e.ctx, bus.StreamActions)
	if err != nil {
		e.t.Fatal(err)
	}
	var last uint64
	for _, subj := range bus.ActionSubjects {
		m, err := s.GetLastMsgForSubject(e.ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		last = max(last, m.Sequence)
	}
	cons, err := e.js.Consumer(e.ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("issuer consumer idle", func() bool {
		info, err := cons.Info(e.ctx)
		return err == nil && info.AckFloor.Stream >= last && info.NumPending == 0 && info.NumAckPending == 0
	})
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	eventually.True(e.t, 20*time.Second, cond, what)
}

func (e *env) count(r *bus.Reader, filter string) (subjects int, msgs uint64) {
	e.t.Helper()
	subs, err := r.Subjects(e.ctx, filter)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, n := range subs {
		msgs += n
	}
	return len(subs), msgs
}

func (e *env) mailCount() int {
	n, _ := e.count(e.mail, bus.MailCommandPrefix+">")
	return n
}

func (e *env) scopeState(subj string) (scope.State, uint64) {
	e.t.Helper()
	var st scope.State
	seq, err := e.scopesR.LastJSON(e.ctx, subj, &st)
	if err != nil {
		e.t.Fatalf("scope %s: %v", subj, err)
	}
	return st, seq
}

func (e *env) issued(linkID string) events.LinkEvent {
	e.t.Helper()
	var ev events.LinkEvent
	if _, err := e.links.LastJSON(e.ctx, events.LinkSubject(linkID, events.TypeIssued), &ev); err != nil {
		e.t.Fatalf("issued %s: %v", linkID, err)
	}
	return ev
}

func (e *env) mailCmd(mailID string) (mail.Command, []byte) {
	e.t.Helper()
	m, err := e.mail.Last(e.ctx, bus.MailCommandPrefix+mailID)
	if err != nil {
		e.t.Fatalf("mail command %s: %v", mailID, err)
	}
	var cmd mail.Command
	if err := json.Unmarshal(m.Data, &cmd); err != nil {
		e.t.Fatal(err)
	}
	return cmd, m.Data
}

// deadLetters returns the reason of every dead letter by source sequence.
func (e *env) deadLetters() map[string]string {
	e.t.Helper()
	s, err := e.js.Stream(e.ctx, bus.StreamDeadLetter)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(e.ctx, seq)
		if err != nil {
			e.t.Fatal(err)
		}
		out[m.Header.Get(bus.HeaderSourceSeq)] = m.Header.Get(bus.HeaderReason)
	}
	return out
}

// metric returns the value of a counter with the given labels.
func (e *env) metric(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
		}
	}
	return 0
}

// remember records the scope subject a published action's link is bound
// to, for linkIDOf.
func (e *env) remember(a events.Action) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.scopeOf == nil {
		e.scopeOf = map[string]string{}
	}
	env := events.EnvelopeOf(a)
	switch a := a.(type) {
	case *events.SigninRequested:
		e.scopeOf[env.EventID] = scope.Signin(env.PracticeID, a.Client.ID)
	case *events.DocumentShared:
		e.scopeOf[env.EventID] = scope.Document(env.PracticeID, a.Client.ID, a.ShareID)
	case *events.AppointmentScheduled:
		e.scopeOf[env.EventID] = scope.Appointment(env.PracticeID, a.Client.ID, a.Appointment.ID)
	}
}

// linkIDOf is the link id an action's event id mints for purpose, in the
// scope of the action with that event id this test published.
func (e *env) linkIDOf(purpose, practiceID, eventID string) string {
	e.t.Helper()
	e.mu.Lock()
	subject, ok := e.scopeOf[eventID]
	e.mu.Unlock()
	if !ok || !strings.HasPrefix(subject, scope.Prefix+practiceID+".") {
		e.t.Fatalf("linkIDOf: this test published no link-minting action %s of practice %s", eventID, practiceID)
	}
	tok, err := e.keys.Mint(e.keys.CurrentKid(), purpose, subject, eventID)
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := link.ID(tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func signin(eventID, client string) *events.SigninRequested {
	return &events.SigninRequested{
		Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
		Client:   events.Client{ID: client, Email: client + "@example.com", Name: "Pat " + client},
		ReturnTo: "/messages",
	}
}

// fetch takes n messages from the issuer consumer without running it.
func (e *env) fetch(n int) []jetstream.Msg {
	e.t.Helper()
	cons, err := e.js.Consumer(e.ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		e.t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		e.t.Fatal(err)
	}
	if len(out) != n {
		e.t.Fatalf("fetched %d messages, want %d", len(out), n)
	}
	return out
}
