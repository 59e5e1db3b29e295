package support_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/support"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
)

// refusing is a mail provider that accepts every email but those to one
// address, which it refuses for good, as SES does an address on its
// suppression list.
type refusing struct {
	refused string
	n       atomic.Int64
}

func (s *refusing) Send(_ context.Context, m *mail.Message) (string, error) {
	if strings.Contains(m.To, s.refused) {
		return "", fmt.Errorf("%w: MessageRejected: the address is on the account-level suppression list", mail.ErrPermanent)
	}
	return fmt.Sprintf("msg-%d", s.n.Add(1)), nil
}

type fixture struct {
	st *devstack.Stack
}

func (f *fixture) get(t *testing.T, path string, host ...string) (int, http.Header, string) {
	t.Helper()
	h := ""
	if len(host) > 0 {
		h = host[0]
	}
	return fetch(t, f.st.URL+path, "", h)
}

// fetch GETs u with an Accept-Language header and a Host ("": none sent,
// the URL's).
func fetch(t *testing.T, u, acceptLanguage, host string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptLanguage != "" {
		req.Header.Set("Accept-Language", acceptLanguage)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func (f *fixture) answer(t *testing.T, query string) (int, support.Answer) {
	t.Helper()
	code, _, body := f.get(t, support.Path+".json?"+query)
	var a support.Answer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("%s: %v\n%s", query, err, body)
	}
	return code, a
}

func byScope(a support.Answer, suffix string) (history.Status, bool) {
	for _, s := range a.Links {
		if strings.HasSuffix(s.Scope, suffix) {
			return s, true
		}
	}
	return history.Status{}, false
}

// startStory runs a real dev stack (embedded nats-server with JetStream,
// issuer, mailer, redeemer) and gives client c-9 five links: two sign-ins
// (the first superseded), a document, a canceled telehealth appointment;
// their links are then revoked for a reason with markup in it. Client c-10's
// address is refused by the mail provider.
func startStory(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1,
		Sender: &refusing{refused: "bounced@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st}
	env := func(id string) events.Envelope {
		return events.Envelope{EventID: id, PracticeID: devstack.DemoPractice}
	}
	kim := events.Client{ID: "c-9", Email: "kim@example.com", Name: "Kim <b>Bold</b>"}
	starts := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	ends := starts.Add(50 * time.Minute)
	publish := func(a events.Action) {
		t.Helper()
		if _, err := events.Publish(ctx, st.JetStream(), a); err != nil {
			t.Fatal(err)
		}
	}
	publish(&events.SigninRequested{Envelope: env("sv-1"), Client: kim})
	eventually.True(t, 20*time.Second, func() bool {
		_, a := f.answer(t, "practice=demo&client=c-9")
		return len(a.Links) == 1 && a.Links[0].Mail == "sent"
	}, "the first sign-in sent")
	publish(&events.SigninRequested{Envelope: env("sv-2"), Client: kim})
	publish(&events.DocumentShared{Envelope: env("sv-3"), Client: kim, Document: events.Document{ID: "d-1", Title: "Care plan"}, ShareID: "s-1"})
	publish(&events.AppointmentScheduled{Envelope: env("sv-4"), Client: kim, Appointment: events.Appointment{ID: "a-1",
		StartsAt: &starts, EndsAt: &ends, Telehealth: true, Timezone: "UTC"}, Reminders: []string{}})
	publish(&events.SigninRequested{Envelope: env("sv-5"), Client: events.Client{ID: "c-10", Email: "bounced@example.com"}})
	eventually.True(t, 20*time.Second, func() bool {
		_, a := f.answer(t, "practice=demo&client=c-9")
		n := 0
		for _, s := range a.Links {
			if s.Mail == "sent" {
				n++
			}
		}
		return n == 4
	}, "four links of c-9 sent")
	eventually.True(t, 20*time.Second, func() bool {
		_, a := f.answer(t, "practice=demo&client=c-10")
		return len(a.Links) == 1 && a.Links[0].Mail == "failed permanently"
	}, "c-10's email refused")
	publish(&events.AppointmentCanceled{Envelope: env("sv-6"), Appointment: events.Appointment{ID: "a-1"}})
	eventually.True(t, 20*time.Second, func() bool {
		_, a := f.answer(t, "practice=demo&client=c-9")
		s, _ := byScope(a, ".appt.a-1")
		return s.Reason == events.ReasonCanceled
	}, "the cancellation")
	return f
}

// TestSupportViewSaysWhatToDo: by client, each link's verdict today and
// what to do — resend after a supersede, unsuppress after a refused
// address, nothing to resend for a canceled appointment — as JSON and as
// a page; by link, one link and its scope.
func TestSupportViewSaysWhatToDo(t *testing.T) {
	f := startStory(t)

	code, a := f.answer(t, "practice=demo&client=c-9")
	if code != http.StatusOK || len(a.Links) != 4 {
		t.Fatalf("%d, %d links: %+v", code, len(a.Links), a)
	}
	var old, current history.Status
	for _, s := range a.Links {
		if strings.HasSuffix(s.Scope, ".signin") {
			if s.Works {
				current = s
			} else {
				old = s
			}
		}
	}
	if old.Reason != events.ReasonSuperseded || old.SupersededBy != current.LinkID || !strings.Contains(old.Todo, "newest email") ||
		!strings.Contains(old.Todo, "resend") {
		t.Errorf("superseded sign-in: %+v", old)
	}
	if !current.Works || !strings.HasPrefix(current.Verdict, "Works") || !strings.Contains(current.Todo, "Nothing to do") {
		t.Errorf("current sign-in: %+v", current)
	}
	if doc, _ := byScope(a, ".doc.s-1"); !doc.Works || doc.Purpose != events.PurposeDocument {
		t.Errorf("document: %+v", doc)
	}
	appt, _ := byScope(a, ".appt.a-1")
	if appt.Works || !strings.Contains(appt.Todo, "the appointment was canceled") || len(appt.Entries) == 0 {
		t.Errorf("appointment: %+v", appt)
	}
	if len(a.Timeline) < 10 {
		t.Errorf("timeline of %d entries", len(a.Timeline))
	}

	_, bounced := f.answer(t, "practice=demo&client=c-10")
	if s := bounced.Links[0]; !s.Works || !strings.Contains(s.Todo, "unsuppress") || !strings.Contains(s.Todo, "Resend") ||
		!strings.Contains(s.Verdict, "not delivered") {
		t.Errorf("refused address: %+v", s)
	}

	// By link: the appointment's link alone.
	code, one := f.answer(t, "link="+appt.LinkID)
	if code != http.StatusOK || len(one.Links) != 1 || one.Links[0].LinkID != appt.LinkID || one.Links[0].Reason != events.ReasonCanceled {
		t.Errorf("by link: %d %+v", code, one)
	}

	// The page says the same in words, escaped.
	code, hdr, page := f.get(t, support.Path+"?practice=demo&client=c-9")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") ||
		!strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("page: %d %v", code, hdr)
	}
	for _, want := range []string{"Why can&#39;t my client get in?", appt.LinkID, "the appointment was canceled", "Ask the client to use the newest email",
		"Works", "Refused", "What to do:"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}

	// Nothing beyond what explain shows: no address, no name, no token.
	_, _, pageBounced := f.get(t, support.Path+"?practice=demo&client=c-10")
	_, _, jsonBounced := f.get(t, support.Path+".json?practice=demo&client=c-10")
	_, _, jsonKim := f.get(t, support.Path+".json?practice=demo&client=c-9")
	for name, body := range map[string]string{"page": page, "json": jsonKim, "page c-10": pageBounced, "json c-10": jsonBounced} {
		for _, secret := range []string{"kim@example.com", "bounced@example.com", "Kim", "/l/"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows %q", name, secret)
			}
		}
	}
}

// TestSupportViewRefusesAndEscapes: bad queries get 400 with the reason,
// an unknown link 404, markup from the query or the ledger is escaped, and
// a request for another host (DNS rebinding) is refused.
func TestSupportViewRefusesAndEscapes(t *testing.T) {
	ctx := context.Background()
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st}

	if code, _, page := f.get(t, support.Path); code != http.StatusOK || !strings.Contains(page, `<form method="get" action="/support"`) {
		t.Fatalf("empty form: %d", code)
	}
	evil := `<script>alert(1)</script>`
	for q, want := range map[string]int{
		"practice=demo":                      http.StatusBadRequest,
		"practice=demo&client=" + evil:       http.StatusBadRequest,
		"link=Lx&client=c-1&practice=demo":   http.StatusBadRequest,
		"link=" + url.QueryEscape(evil):      http.StatusBadRequest,
		"link=Lnever":                        http.StatusNotFound,
		"practice=demo&client=nobody-at-all": http.StatusOK,
	} {
		code, _, page := f.get(t, support.Path+"?"+strings.ReplaceAll(q, evil, url.QueryEscape(evil)))
		if code != want {
			t.Errorf("%s: %d, want %d", q, code, want)
		}
		if strings.Contains(page, "<script>") {
			t.Errorf("%s: the page carries the query's markup unescaped", q)
		}
	}
	if code, _, page := f.get(t, support.Path+"?practice=demo&client=nobody-at-all"); code != 200 || !strings.Contains(page, "No links on record") {
		t.Errorf("no links: %d", code)
	}

	// A revocation reason from the ledger, with markup.
	publish := func(a events.Action) {
		if _, err := events.Publish(ctx, st.JetStream(), a); err != nil {
			t.Fatal(err)
		}
	}
	env := func(id string) events.Envelope {
		return events.Envelope{EventID: id, PracticeID: devstack.DemoPractice}
	}
	publish(&events.SigninRequested{Envelope: env("esc-1"), Client: events.Client{ID: "c-11", Email: "lee@example.com"}})
	// The revocation goes out once the link is issued: the issuer handles
	// actions in parallel, and a revocation handled before the client's
	// first scope exists finds nothing to revoke.
	eventually.True(t, 20*time.Second, func() bool {
		_, a := f.answer(t, "practice=demo&client=c-11")
		return len(a.Links) == 1
	}, "c-11's sign-in link")
	publish(&events.ClientLinksRevoked{Envelope: env("esc-2"), Client: events.Client{ID: "c-11"}, Reason: `<img src=x onerror=alert(1)> lost phone`})
	var page string
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, page = f.get(t, support.Path+"?practice=demo&client=c-11")
		if strings.Contains(page, "lost phone") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revocation never showed:\n%s", page)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt; lost phone") {
		t.Errorf("the revocation reason is not escaped:\n%s", page)
	}

	if code, _, _ := f.get(t, support.Path+".json?practice=demo&client=c-11", "attacker.example"); code != http.StatusMisdirectedRequest {
		t.Errorf("Host attacker.example: %d, want 421", code)
	}
}

// TestSupportViewLedgerDown: a ledger that cannot be read (the NATS
// connection is gone) answers 503 with a plain message, and the cause is
// logged.
func TestSupportViewLedgerDown(t *testing.T) {
	srv := bustest.Start(t)
	nc, js := srv.Connect(t)
	nc.Close()
	logs := &syncbuf.Buffer{}
	h := support.Handler(js, nil, slog.New(slog.NewJSONHandler(logs, nil)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, support.Path+".json?practice=demo&client=c-1", nil))
	var a support.Answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusServiceUnavailable || a.Error != "The ledger could not be read; try again." {
		t.Fatalf("%d %+v", rec.Code, a)
	}
	if !strings.Contains(logs.String(), "the ledger could not be read") || !strings.Contains(logs.String(), `"err":`) {
		t.Fatalf("not logged: %s", logs.String())
	}
}
