package redeemer_test

import (
	"bufio"
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/scope"
)

const renewedText = "If this link is on record, we've emailed a new one"

// renew POSTs a renewal and checks the one answer every renewal gets.
func renew(t testing.TB, s *server, tok string) answer {
	t.Helper()
	a := do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok+"/renew")
	if a.status != http.StatusOK || !strings.Contains(a.body, renewedText) {
		t.Fatalf("renew: %d\n%s", a.status, a.body)
	}
	return a
}

// renewals counts what renewals asked to send: sign-in requests on ACTIONS
// (nothing else publishes them in these tests) and renewal mail commands
// on MAIL.
func (e *env) renewals() int {
	e.t.Helper()
	return int(e.count(bus.StreamActions, events.SubjectSigninRequested)) + len(e.renewMails())
}

// metric sums a counter's samples whose labels contain sel across servers.
func metric(t testing.TB, name, sel string, servers ...*server) float64 {
	t.Helper()
	var sum float64
	for _, s := range servers {
		a := do(t, noRedirect(nil), "GET", s.admin.URL+"/metrics")
		sc := bufio.NewScanner(strings.NewReader(a.body))
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, sel) {
				continue
			}
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			sum += v
		}
	}
	return sum
}

// TestRenewalStorm: 100 concurrent renewal requests for one client, with
// every kind of that client's links, on two replicas: exactly the client's
// limit (5) of renewals is sent, every answer is the same 200 page, and
// once the window has passed renewals are allowed again.
func TestRenewalStorm(t *testing.T) {
	e := newEnv(t)
	// The per-IP limit (every request here comes from 127.0.0.1) is lifted
	// so that the per-client limit, shared by the replicas, is what holds.
	noIPLimit := func(c *redeemer.Config) { c.RenewIPBurst = 1000 }
	a, b := e.start(noIPLimit), e.start(noIPLimit)
	const client = "c-storm"
	start := t0.Add(48 * time.Hour)
	oldSignin, _ := e.issue(spec{EventID: "ev-st-1", Client: client, ReturnTo: "/bills"})
	signin, _ := e.issue(spec{EventID: "ev-st-2", Client: client})
	e.ticketOf(t, a, do(t, noRedirect(nil), "POST", a.URL+"/l/"+signin), e.portal.URL+"/portal") // used
	doc, _ := e.issue(spec{EventID: "ev-st-3", Client: client, Purpose: events.PurposeDocument, DocumentID: "d-1", ShareID: "sh-1"})
	tele, _ := e.issue(spec{EventID: "ev-st-4", Client: client, Purpose: events.PurposeTelehealth, AppointmentID: "ap-1",
		StartsAt: start, EndsAt: start.Add(time.Hour)})
	tokens := []string{oldSignin, signin, doc, tele}

	storm := func(n int) []answer {
		t.Helper()
		answers := make([]answer, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			srv := a
			if i%2 == 1 {
				srv = b
			}
			tok := tokens[(i/2)%len(tokens)]
			wg.Go(func() {
				<-gate
				answers[i], errs[i] = doE(noRedirect(nil), "POST", srv.URL+"/l/"+tok+"/renew")
			})
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("renew %d: %v", i, err)
			}
			if answers[i].status != http.StatusOK || answers[i].body != answers[0].body || !strings.Contains(answers[i].body, renewedText) {
				t.Fatalf("renew %d: %d, body differs from the first answer:\n%s\n---\n%s", i, answers[i].status, answers[i].body, answers[0].body)
			}
		}
		return answers
	}

	first := storm(100)
	if n := e.renewals(); n != 5 {
		t.Fatalf("%d renewals sent or queued, want the client's limit of 5", n)
	}
	if sent, limited, failed := metric(t, "linkpipe_redeemer_renewals_total", `result="sent"`, a, b)+metric(t, "linkpipe_redeemer_renewals_total", `result="resent"`, a, b),
		metric(t, "linkpipe_redeemer_renewals_total", `result="client_limited"`, a, b),
		metric(t, "linkpipe_redeemer_renewals_total", `result="failed"`, a, b); sent != 5 || limited != 95 || failed != 0 {
		t.Fatalf("renewal results: %v sent, %v limited, %v failed; want 5, 95, 0", sent, limited, failed)
	}
	for id, cmd := range e.renewMails() { // the telehealth link's renewals re-mail it
		if cmd.To.Email != client+"@example.com" || cmd.Kind != mail.KindAppointmentReminder {
			t.Fatalf("renewal mail %s: %+v", id, cmd)
		}
	}
	// Another client of the same practice is not limited by this one.
	other, _ := e.issue(spec{EventID: "ev-st-other", Client: "c-bystander"})
	renew(t, a, other)
	if n := e.renewals(); n != 6 {
		t.Fatalf("another client's renewal: %d renewals, want 6", n)
	}

	// The window: the RENEWALS stream forgets a renewal after MaxAge (15
	// minutes of real time in production). Shrink it to 2s, wait for the
	// client's renewals to age out, and restore it so that the next burst
	// falls in one window however slow the machine is.
	ctx := context.Background()
	if err := bus.Setup(ctx, e.js, bus.Options{RenewalWindow: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	subj := bus.RenewalPrefix + practiceAcme + "." + client
	eventually(t, "the renewal window to pass", func() bool { return e.count(bus.StreamRenewals, subj) == 0 })
	if err := bus.Setup(ctx, e.js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	second := storm(20)
	if second[0].body != first[0].body {
		t.Fatal("the answer changed after the window")
	}
	if n := e.renewals(); n != 6+5 {
		t.Fatalf("after the window: %d renewals, want 11 (5 more)", n)
	}
	if n := e.count(bus.StreamRenewals, subj); n != 5 {
		t.Fatalf("RENEWALS holds %d renewals of the client, want 5", n)
	}
}

// TestTelehealthRenewalMailsCurrentLink: renewing a telehealth link mails
// the appointment's current link again (not a sign-in link), with its
// current window, and names the key id and mint event the mailer needs to
// re-derive that link's token, also when the clicked link is not the
// current one and the current one was minted with another key.
func TestTelehealthRenewalMailsCurrentLink(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	start := t0.Add(72 * time.Hour)
	appt := spec{EventID: "ev-appt-1", Client: "c-tele", Purpose: events.PurposeTelehealth, AppointmentID: "appt-9",
		StartsAt: start, EndsAt: start.Add(50 * time.Minute)}
	tok, id := e.issue(appt)

	seen := map[string]bool{}
	next := func() mail.Command {
		t.Helper()
		var fresh []mail.Command
		for mid, cmd := range e.renewMails() {
			if !seen[mid] {
				seen[mid] = true
				fresh = append(fresh, cmd)
			}
		}
		if len(fresh) != 1 {
			t.Fatalf("%d new renewal mail commands, want 1", len(fresh))
		}
		return fresh[0]
	}
	// check verifies what the mailer will do with cmd: re-derive wantTok
	// from it and render a reminder carrying the link.
	check := func(cmd mail.Command, wantTok, wantID string, wantKid string, wantStart time.Time) {
		t.Helper()
		if !strings.HasPrefix(cmd.MailID, wantID+"-renew-") || !events.ValidID(cmd.MailID) || cmd.Kind != mail.KindAppointmentReminder ||
			cmd.PracticeID != practiceAcme || cmd.LinkID != wantID || cmd.Purpose != events.PurposeTelehealth || cmd.Kid != wantKid ||
			cmd.To != (events.Client{ID: "c-tele", Email: "c-tele@example.com", Name: "Pat c-tele"}) ||
			!strings.HasPrefix(cmd.CauseEventID, "renew-") || !cmd.At.Equal(e.clock.Now()) ||
			cmd.Appointment == nil || !cmd.Appointment.StartsAt.Equal(wantStart) || !cmd.ExpiresAt.Equal(cmd.Appointment.EndsAt.Add(30*time.Minute)) {
			t.Fatalf("renewal mail command %+v", cmd)
		}
		derived, err := e.keys.Mint(cmd.Kid, cmd.Purpose, cmd.PracticeID, cmd.MintEventID)
		if err != nil || derived != wantTok {
			t.Fatalf("the mailer would derive %q (%v), want the current link's token %q", derived, err, wantTok)
		}
		msg, err := mail.Render(&cmd, e.dir.Get(cmd.PracticeID), "http://links.test/l/"+derived)
		if err != nil || !strings.HasPrefix(msg.Subject, "Reminder: ") || !strings.Contains(msg.Text, derived) {
			t.Fatalf("rendered: %+v %v", msg, err)
		}
	}

	// The clicked link is the current one.
	renew(t, s, tok)
	cmd := next()
	check(cmd, tok, id, "k1", start)
	if cmd.MintEventID != "ev-appt-1" || !cmd.ValidFrom.Equal(t0) {
		t.Fatalf("mail command %+v", cmd)
	}

	// A reschedule moves the window; the link stays, the mail carries the new window.
	e.clock.Advance(time.Hour)
	moved := start.Add(24 * time.Hour)
	if err := e.reschedule(id, moved, moved.Add(50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	renew(t, s, tok)
	cmd = next()
	check(cmd, tok, id, "k1", moved)
	if cmd.MintEventID != "ev-appt-1" || !cmd.ValidFrom.Equal(t0) {
		t.Fatalf("after the reschedule: %+v", cmd)
	}

	// A newer link of the appointment, minted with another key: the old
	// link's renewal mails the current one, under the current one's kid.
	appt.EventID, appt.Kid, appt.StartsAt, appt.EndsAt = "ev-appt-2", "k2", moved, moved.Add(50*time.Minute)
	tok2, id2 := e.issue(appt)
	do(t, noRedirect(nil), "GET", s.URL+"/l/"+tok).refused(t, http.StatusGone, events.ReasonSuperseded)
	renew(t, s, tok)
	cmd = next()
	check(cmd, tok2, id2, "k2", moved)
	renew(t, s, tok2)
	check(next(), tok2, id2, "k2", moved)

	if n := e.count(bus.StreamActions, events.SubjectSigninRequested); n != 0 {
		t.Fatalf("%d sign-in links requested for a telehealth renewal", n)
	}
}

// TestTelehealthRenewalFallsBackToSignin: when the appointment cannot be
// joined with its link any more (canceled, revoked, over) or its current
// link cannot be named, the renewal asks for a sign-in link to the
// appointment's page instead, for the address on record.
func TestTelehealthRenewalFallsBackToSignin(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	start := t0.Add(24 * time.Hour)
	tele := func(client, eventID string) spec {
		return spec{EventID: eventID, Client: client, Purpose: events.PurposeTelehealth, AppointmentID: "ap-" + client,
			StartsAt: start, EndsAt: start.Add(time.Hour)}
	}
	cases := map[string]func(t *testing.T, client string) string{
		"canceled": func(t *testing.T, client string) string {
			tok, id := e.issue(tele(client, "ev-"+client))
			if err := e.cancel(id); err != nil {
				t.Fatal(err)
			}
			// The address on record is the scope's newest.
			e.change(id, func(st *scope.State) { st.Client.Email = "new-" + client + "@example.com" })
			return tok
		},
		"revoked": func(t *testing.T, client string) string {
			tok, _ := e.issue(tele(client, "ev-"+client))
			e.revokeClient(practiceAcme, client, "lost phone")
			return tok
		},
		"over": func(t *testing.T, client string) string {
			sp := tele(client, "ev-"+client)
			sp.StartsAt, sp.EndsAt = t0.Add(-2*time.Hour), t0.Add(-time.Hour) // ended, grace 30m: over
			tok, _ := e.issue(sp)
			return tok
		},
		"current kid unknown": func(t *testing.T, client string) string {
			tok, _ := e.issue(tele(client, "ev-"+client))
			sp := tele(client, "ev2-"+client)
			sp.NoKid = true // an issuer that does not record the kid
			e.issue(sp)
			return tok
		},
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			client := "c-" + strings.ReplaceAll(name, " ", "-")
			tok := cases[name](t, client)
			before := e.count(bus.StreamActions, events.SubjectSigninRequested)
			renew(t, s, tok)
			if n := e.count(bus.StreamActions, events.SubjectSigninRequested); n != before+1 {
				t.Fatalf("%d sign-in requests, want %d", n, before+1)
			}
			sr := e.lastSigninRequest()
			email := client + "@example.com"
			if name == "canceled" {
				email = "new-" + email
			}
			if sr.PracticeID != practiceAcme || sr.Client.ID != client || sr.Client.Email != email ||
				sr.ReturnTo != "/appointments/ap-"+client || !strings.HasPrefix(sr.EventID, "renew-") {
				t.Fatalf("sign-in request %+v", sr)
			}
			if n := len(e.renewMails()); n != 0 {
				t.Fatalf("%d appointment mails queued", n)
			}
		})
	}
}
