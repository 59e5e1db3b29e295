package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
)

// tokenRe is any link token (kid "." 43 base64url characters, the HMAC).
var tokenRe = regexp.MustCompile(`(^|[^A-Za-z0-9_-])[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{43}($|[^A-Za-z0-9_-])`)

// streamMessages returns every message of stream, oldest first.
func streamMessages(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// A whole pipeline run — a sign-in from the /dev form, a document share, a
// telehealth appointment scheduled, moved and canceled, a redemption,
// refused clicks, a renewal, a client revocation, a dead-lettered action,
// a transient SES failure and an address SES rejects for good, both with a
// message that quotes the address — then
// no email address, no token and no link URL in any log line (at debug),
// any LINKS event, any mail.done record or any dead-letter reason.
func TestNoAddressOrTokenInLogsOrEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const (
		signinAddr = "signin.pat@example.com"
		docAddr    = "doc.sam@example.com"
		teleAddr   = "tele.alex@example.com"
		bounceAddr = "bounce.lee@example.com"
		deadAddr   = "dead.letter@example.com"
	)
	addrs := []string{signinAddr, docAddr, teleAddr, bounceAddr, deadAddr}
	fake := sestest.NewFake(t)
	// What SES answers for an unverified identity quotes the address.
	fake.FailTo(bounceAddr, sestest.Fault{Status: http.StatusBadRequest, Code: "MessageRejected",
		Message: "Email address is not verified. The following identities failed the check in region US-EAST-1: " + bounceAddr + ", <" + bounceAddr + ">"})
	sender, err := ses.New(ctx, fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1,
		Sender: sender, From: "no-reply@linkpipe.example", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	js := st.JetStream()
	c := noRedirect()

	// linksTo waits for n emails to addr and returns their links.
	linksTo := func(addr string, n int) []string {
		t.Helper()
		var links []string
		eventually.True(t, 30*time.Second, func() bool {
			links = nil
			for _, m := range fake.Accepted() {
				if len(m.To) == 1 && m.To[0] == addr {
					links = append(links, linkRe.FindString(m.Text))
				}
			}
			return len(links) >= n
		}, fmt.Sprintf("%d emails to %s", n, addr))
		return links
	}
	publish := func(a events.Action) {
		t.Helper()
		if _, err := events.Publish(ctx, js, a); err != nil {
			t.Fatal(err)
		}
	}
	post := func(u string, want int) {
		t.Helper()
		resp, body := do(t, c, http.MethodPost, u)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d, want %d: %s", u, resp.StatusCode, want, body)
		}
	}
	env := func(id string) events.Envelope {
		return events.Envelope{EventID: id, PracticeID: devstack.DemoPractice}
	}

	// A sign-in from the /dev page's form.
	form := url.Values{"client": {"c-signin"}, "name": {"Pat"}, "email": {signinAddr}, "return_to": {"/messages"}}
	resp, err := c.PostForm(st.URL+"/dev/signin", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /dev/signin: %d", resp.StatusCode)
	}
	signin := linksTo(signinAddr, 1)[0]

	// A document share, whose first attempt SES refuses for now with a
	// message that quotes the address.
	fake.Script(sestest.Fault{Status: http.StatusInternalServerError, Code: "InternalFailure",
		Message: "temporary failure delivering to " + docAddr})
	publish(&events.DocumentShared{Envelope: env("pii-doc"), Client: events.Client{ID: "c-doc", Email: docAddr, Name: "Sam"},
		Document: events.Document{ID: "d-1", Title: "Intake form"}, ShareID: "share-1"})
	doc := linksTo(docAddr, 1)[0]

	// A telehealth appointment: scheduled, rescheduled, canceled.
	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Minute)
	end := start.Add(time.Hour)
	publish(&events.AppointmentScheduled{Envelope: env("pii-appt-1"), Client: events.Client{ID: "c-tele", Email: teleAddr, Name: "Alex"},
		Appointment: events.Appointment{ID: "appt-1", StartsAt: &start, EndsAt: &end, Telehealth: true, Timezone: "America/Chicago"}})
	tele := linksTo(teleAddr, 1)[0]
	start2, end2 := start.Add(24*time.Hour), end.Add(24*time.Hour)
	publish(&events.AppointmentRescheduled{Envelope: env("pii-appt-2"), Appointment: events.Appointment{ID: "appt-1", StartsAt: &start2, EndsAt: &end2}})
	linksTo(teleAddr, 2)
	publish(&events.AppointmentCanceled{Envelope: env("pii-appt-3"), Appointment: events.Appointment{ID: "appt-1"}})
	linksTo(teleAddr, 3)

	// A redemption, then refused clicks (used; canceled), and a renewal.
	do(t, c, http.MethodGet, signin)
	post(signin, http.StatusSeeOther)
	post(signin, http.StatusGone)
	do(t, c, http.MethodGet, tele)
	post(signin+"/renew", http.StatusOK)
	renewed := linksTo(signinAddr, 2)[1]

	// A client revocation, and a click on the revoked document link.
	publish(&events.ClientLinksRevoked{Envelope: env("pii-revoke"), Client: events.Client{ID: "c-doc"}, Reason: "account closed"})
	docToken := strings.TrimPrefix(doc, st.URL+"/l/")
	docID, err := link.ID(docToken)
	if err != nil {
		t.Fatal(err)
	}
	links := bus.NewReader(js, bus.StreamLinks)
	eventually.True(t, 20*time.Second, func() bool {
		_, err := links.Last(ctx, events.LinkSubject(docID, events.TypeRevoked))
		return err == nil
	}, "the document link's revoked event")
	post(doc, http.StatusGone)

	// An action refused at the door (dead-lettered), with an address in it.
	bad := fmt.Sprintf(`{"event_id":"pii-bad","practice_id":"demo","client":{"id":"c-bad","email":%q},"return_to":"//evil.example"}`, deadAddr)
	if _, err := js.Publish(ctx, events.SubjectSigninRequested, []byte(bad)); err != nil {
		t.Fatal(err)
	}

	// An address SES refuses for good.
	publish(&events.SigninRequested{Envelope: env("pii-bounce"), Client: events.Client{ID: "c-bounce", Email: bounceAddr, Name: "Lee"}})
	var failed events.LinkEvent
	eventually.True(t, 30*time.Second, func() bool {
		for _, m := range streamMessages(ctx, t, js, bus.StreamLinks) {
			var ev events.LinkEvent
			if json.Unmarshal(m.Data, &ev) == nil && ev.Type == events.TypeFailed && ev.Permanent && ev.ClientID == "c-bounce" {
				failed = ev
				return true
			}
		}
		return false
	}, "the bounce's permanent failed event")
	if !strings.Contains(failed.Reason, "MessageRejected") {
		t.Errorf("failed reason %q does not say why", failed.Reason)
	}
	eventually.True(t, 20*time.Second, func() bool {
		return len(streamMessages(ctx, t, js, bus.StreamDeadLetter)) > 0
	}, "the dead-lettered action")
	// The redemption's used event (the projector) and the click events.
	signinID, err := link.ID(strings.TrimPrefix(signin, st.URL+"/l/"))
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, func() bool {
		_, err := links.Last(ctx, events.LinkSubject(signinID, events.TypeUsed))
		return err == nil
	}, "the sign-in link's used event")
	time.Sleep(300 * time.Millisecond) // the last log lines

	// Everything a log reader or a LINKS subscriber sees.
	type place struct{ where, text string }
	var seen []place
	for i, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		seen = append(seen, place{fmt.Sprintf("log line %d", i+1), line})
	}
	for _, m := range streamMessages(ctx, t, js, bus.StreamLinks) {
		hdr, _ := json.Marshal(m.Header)
		seen = append(seen, place{"LINKS " + m.Subject, string(m.Data) + " " + string(hdr)})
	}
	for _, m := range streamMessages(ctx, t, js, bus.StreamMail) {
		if strings.HasPrefix(m.Subject, bus.MailDonePrefix) {
			seen = append(seen, place{"MAIL " + m.Subject, string(m.Data)})
		}
	}
	for _, m := range streamMessages(ctx, t, js, bus.StreamDeadLetter) {
		seen = append(seen, place{"DEADLETTER " + m.Subject + " reason", m.Header.Get(bus.HeaderReason)})
	}
	if len(seen) < 20 {
		t.Fatalf("only %d log lines and messages: the run did not happen", len(seen))
	}
	var tokens []string
	for _, u := range []string{signin, doc, tele, renewed} {
		tokens = append(tokens, strings.TrimPrefix(u, st.URL+"/l/"))
	}
	for _, p := range seen {
		for _, a := range addrs {
			if strings.Contains(strings.ToLower(p.text), a) {
				t.Errorf("%s carries the address %s: %s", p.where, a, p.text)
			}
		}
		for _, tok := range tokens {
			if strings.Contains(p.text, tok) {
				t.Errorf("%s carries a token: %s", p.where, p.text)
			}
		}
		if tokenRe.MatchString(p.text) || strings.Contains(p.text, "/l/") {
			t.Errorf("%s carries something like a token or a link URL: %s", p.where, p.text)
		}
	}
}
