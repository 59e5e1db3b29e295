package redeemer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/projector"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

// Practices of the fixture: acme has its own portal, plain uses the
// redeemer's default.
const (
	practiceAcme  = "acme"
	practicePlain = "plain"
)

// env is one NATS server, a fake clock, a keyring, the practice directory
// and a portal that records what it receives.
type env struct {
	t      testing.TB
	srv    *bustest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	keys   *link.Keyring
	clock  *clock.Fake
	dir    *practice.Directory
	signer *ticket.Signer

	portal        *httptest.Server // acme's portal
	defaultPortal *httptest.Server // the redeemer's PortalURL
	mu            sync.Mutex
	landed        []*http.Request

	actionSeq atomic.Uint64
	// natsClosed is set by a test that closes the connection on purpose:
	// the projector may then stop with "connection closed", as it should.
	natsClosed atomic.Bool
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, srv: bustest.Start(t), clock: clock.NewFake(t0)}
	e.nc, e.js = e.srv.Connect(t)
	// k1 mints; k2 is a second key (tokens minted before or after a
	// rotation), so a test can tell which kid a mail command names.
	var err error
	e.keys, err = link.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) +
		",k2:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{8}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	e.signer, err = ticket.NewSigner(bytes.Repeat([]byte{9}, 32), "http://links.test")
	if err != nil {
		t.Fatal(err)
	}
	record := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.mu.Lock()
			e.landed = append(e.landed, r)
			e.mu.Unlock()
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<!doctype html><title>"+name+"</title><h1>Welcome to the "+name+"</h1>")
		}))
		t.Cleanup(s.Close)
		return s
	}
	e.portal, e.defaultPortal = record("Acme portal"), record("default portal")
	ctx := context.Background()
	e.dir, err = practice.Open(ctx, e.js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.dir.Close() })
	if err := e.dir.Put(ctx, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "p1", PracticeID: practiceAcme},
		Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "desk@acme.example", PortalURL: e.portal.URL + "/portal"},
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// server is one redeemer replica behind an httptest server (configured by
// Redeemer.ConfigureServer, as cmd/redeemer does), its admin handler behind
// another, its projector running until the test ends.
type server struct {
	*httptest.Server
	admin *httptest.Server
	r     *redeemer.Redeemer
}

func (e *env) start(mod ...func(*redeemer.Config)) *server {
	e.t.Helper()
	cfg := redeemer.Config{
		JS: e.js, NC: e.nc, Practices: e.dir, Signer: e.signer,
		PublicURL: "http://links.test", PortalURL: e.defaultPortal.URL,
		CookieKey: bytes.Repeat([]byte{3}, 32), Clock: e.clock,
		Log: slog.New(slog.DiscardHandler),
		// Every test client is 127.0.0.1: no per-IP click limit unless a
		// test sets one.
		ClickPerIP: rate.Inf, ClickIPBurst: 1,
	}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := redeemer.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	pj, err := projector.New(projector.Config{JS: cfg.JS, Log: cfg.Log})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pj.Run(ctx) }()
	hs := httptest.NewUnstartedServer(nil)
	r.ConfigureServer(hs.Config)
	hs.Start()
	as := httptest.NewServer(r.AdminHandler())
	e.t.Cleanup(func() {
		hs.Close()
		as.Close()
		cancel()
		if err := <-done; err != nil && !e.natsClosed.Load() {
			e.t.Errorf("projector: %v", err)
		}
	})
	return &server{Server: hs, admin: as, r: r}
}

// spec describes a link to issue.
type spec struct {
	Purpose  string // default signin
	Practice string // default acme
	Client   string // default c-1
	EventID  string // required
	// Kid mints the token (default the keyring's current kid, k1). NoKid
	// leaves scope.State.Kid empty, as an issuer that does not record it.
	Kid      string
	NoKid    bool
	ReturnTo string
	// Document links.
	DocumentID, ShareID string
	// Telehealth links.
	AppointmentID string
	StartsAt      time.Time
	EndsAt        time.Time
}

// issue does what the issuer does for an action (HELPERS.md data flow step
// 2): mint the token, CAS-publish the scope state that makes the link
// current, publish links.<id>.issued. It returns the token and link id.
func (e *env) issue(s spec) (token, linkID string) {
	e.t.Helper()
	if s.Purpose == "" {
		s.Purpose = events.PurposeSignin
	}
	if s.Practice == "" {
		s.Practice = practiceAcme
	}
	if s.Client == "" {
		s.Client = "c-1"
	}
	ctx := context.Background()
	if s.Kid == "" {
		s.Kid = e.keys.CurrentKid()
	}
	bound := scope.OfLink(&events.LinkEvent{Purpose: s.Purpose, PracticeID: s.Practice, ClientID: s.Client,
		ShareID: s.ShareID, AppointmentID: s.AppointmentID})
	token, err := e.keys.Mint(s.Kid, s.Purpose, bound, s.EventID)
	if err != nil {
		e.t.Fatal(err)
	}
	linkID, err = link.ID(token)
	if err != nil {
		e.t.Fatal(err)
	}
	now := e.clock.Now()
	pol := e.dir.Get(s.Practice).Policy
	ev := &events.LinkEvent{
		EventID: "issued-" + linkID, Type: events.TypeIssued, LinkID: linkID,
		PracticeID: s.Practice, ClientID: s.Client, Purpose: s.Purpose, At: now, CauseEventID: s.EventID,
		ReturnTo: s.ReturnTo, DocumentID: s.DocumentID, ShareID: s.ShareID, AppointmentID: s.AppointmentID,
	}
	st := scope.State{Change: scope.ChangeIssued, LinkID: linkID, Purpose: s.Purpose, OneTime: true,
		ValidFrom: now, ExpiresAt: now.Add(pol.SigninTTL), EventID: s.EventID, At: now,
		ActionSeq: e.actionSeq.Add(1)}
	if !s.NoKid {
		st.Kid = s.Kid
	}
	switch s.Purpose {
	case events.PurposeDocument:
		st.ExpiresAt = now.Add(pol.DocumentTTL)
	case events.PurposeTelehealth:
		st.OneTime = false
		st.ExpiresAt = s.EndsAt.Add(pol.TelehealthGrace)
		st.Appointment = &events.Appointment{ID: s.AppointmentID, StartsAt: &s.StartsAt, EndsAt: &s.EndsAt,
			Telehealth: true, Timezone: "America/Chicago"}
		st.Client = &events.Client{ID: s.Client, Email: s.Client + "@example.com", Name: "Pat " + s.Client}
	}
	ev.ValidFrom, ev.ExpiresAt = &st.ValidFrom, &st.ExpiresAt
	if _, _, err := scope.NewStore(e.js).Mutate(ctx, scope.OfLink(ev), func(cur scope.Entry) (*scope.State, error) {
		next := st
		ev.Supersedes = ""
		if cur.Found() {
			next.Supersedes, ev.Supersedes = cur.State.LinkID, cur.State.LinkID
		}
		return &next, nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := bus.PublishEvent(ctx, e.js, ev); err != nil {
		e.t.Fatal(err)
	}
	return token, linkID
}

// change CAS-publishes a change to the scope of linkID's issued event (what
// the issuer does on revoke, cancel, reschedule).
func (e *env) change(linkID string, f func(*scope.State)) {
	e.t.Helper()
	if err := e.changeE(linkID, f); err != nil {
		e.t.Fatal(err)
	}
}

// changeE is change for any goroutine: it re-reads and retries when the
// conditional publish loses, as the issuer does, and returns once the new
// state is written.
func (e *env) changeE(linkID string, f func(*scope.State)) error {
	ctx := context.Background()
	var ev events.LinkEvent
	if _, err := bus.NewReader(e.js, bus.StreamLinks).LastJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev); err != nil {
		return err
	}
	return e.changeScope(scope.OfLink(&ev), f)
}

func (e *env) changeScope(subject string, f func(*scope.State)) error {
	_, _, err := scope.NewStore(e.js).Mutate(context.Background(), subject, func(cur scope.Entry) (*scope.State, error) {
		if !cur.Found() {
			return nil, fmt.Errorf("change of %s: no state", subject)
		}
		st := cur.State
		f(&st)
		return &st, nil
	})
	return err
}

// reschedule is what the issuer does on actions.appointment.rescheduled:
// same link, same valid_from, new appointment window; the link is valid
// until the new end plus the practice's grace.
func (e *env) reschedule(linkID string, startsAt, endsAt time.Time) error {
	now := e.clock.Now()
	grace := e.dir.Get(practiceAcme).Policy.TelehealthGrace
	return e.changeE(linkID, func(st *scope.State) {
		appt := *st.Appointment
		appt.StartsAt, appt.EndsAt = &startsAt, &endsAt
		st.Change, st.Appointment, st.ExpiresAt = scope.ChangeRescheduled, &appt, endsAt.Add(grace)
		st.EventID, st.At = "ev-resched-"+startsAt.Format("20060102T150405"), now
	})
}

// cancel is what the issuer does on actions.appointment.canceled.
func (e *env) cancel(linkID string) error {
	now := e.clock.Now()
	return e.changeE(linkID, func(st *scope.State) {
		st.Change, st.CanceledAt, st.EventID, st.At = scope.ChangeCanceled, &now, "ev-cancel", now
	})
}

// revokeClient is what the issuer does on actions.client.links_revoked:
// every scope of the client gets a revoked state.
func (e *env) revokeClient(practiceID, clientID, reason string) {
	e.t.Helper()
	subjects, err := scope.NewStore(e.js).ListClient(context.Background(), practiceID, clientID)
	if err != nil {
		e.t.Fatal(err)
	}
	now := e.clock.Now()
	for _, subject := range subjects {
		if err := e.changeScope(subject, func(st *scope.State) {
			st.Change, st.RevokedAt, st.RevokedReason, st.EventID, st.At = scope.ChangeRevoked, &now, reason, "ev-revoke-"+clientID, now
		}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// count is the number of messages on subj in stream.
func (e *env) count(stream, subj string) uint64 {
	e.t.Helper()
	subs, err := bus.NewReader(e.js, stream).Subjects(context.Background(), subj)
	if err != nil {
		e.t.Fatal(err)
	}
	var n uint64
	for _, c := range subs {
		n += c
	}
	return n
}

// lastEvent decodes the last lifecycle event on links.<id>.<typ>.
func (e *env) lastEvent(linkID, typ string) *events.LinkEvent {
	e.t.Helper()
	var ev events.LinkEvent
	if _, err := bus.NewReader(e.js, bus.StreamLinks).LastJSON(context.Background(), events.LinkSubject(linkID, typ), &ev); err != nil {
		e.t.Fatalf("%s %s: %v", linkID, typ, err)
	}
	return &ev
}

// projectorIdle waits until the projector has acked every SCOPES message.
func (e *env) projectorIdle() {
	e.t.Helper()
	ctx := context.Background()
	eventually.True(e.t, 15*time.Second, func() bool {
		c, err := e.js.Consumer(ctx, bus.StreamScopes, bus.ConsumerProjector)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "projector caught up")
}

// noRedirect is a client that returns redirects instead of following them.
func noRedirect(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	status int
	body   string
	header http.Header
}

func do(t testing.TB, c *http.Client, method, url string) answer {
	t.Helper()
	a, err := doE(c, method, url)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// doE is do for any goroutine.
func doE(c *http.Client, method, url string) (answer, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{resp.StatusCode, string(b), resp.Header}, nil
}

var reasonMeta = regexp.MustCompile(`<meta name="linkpipe-reason" content="([a-z_]+)">`)

// reason is the page's linkpipe-reason, "" if none.
func (a answer) reason() string {
	m := reasonMeta.FindStringSubmatch(a.body)
	if m == nil {
		return ""
	}
	return m[1]
}

// refused checks a refusal answer: status and reason.
func (a answer) refused(t testing.TB, status int, reason string) {
	t.Helper()
	if a.status != status || a.reason() != reason {
		t.Fatalf("got %d reason %q, want %d %q\n%s", a.status, a.reason(), status, reason, a.body)
	}
	if !strings.Contains(a.body, htmlEscape(scope.Explain(reason))) {
		t.Fatalf("page does not explain %q in plain words:\n%s", reason, a.body)
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "'", "&#39;", "<", "&lt;", ">", "&gt;", `"`, "&#34;").Replace(s)
}

// renewalRequests are the actions.renewal.requested on ACTIONS, in order.
func (e *env) renewalRequests() []*events.RenewalRequested {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, bus.StreamActions)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*events.RenewalRequested
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(events.SubjectRenewalRequested))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		a, err := events.Decode(m.Subject, m.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		rr := a.(*events.RenewalRequested)
		if m.Header.Get("Nats-Msg-Id") != rr.EventID {
			e.t.Fatalf("renewal request without its event id as Nats-Msg-Id: %v", m.Header)
		}
		out = append(out, rr)
		seq = m.Sequence + 1
	}
}
