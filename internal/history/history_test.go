package history_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Support's question, answered from the ledger of a real pipeline: a client
// with a sign-in link, a document link and a telehealth appointment; the
// appointment is canceled, then all the client's links are revoked.
func TestExplainTellsWhyEachLinkFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	js := st.JetStream()
	env := func(id string) events.Envelope {
		return events.Envelope{EventID: id, PracticeID: devstack.DemoPractice}
	}
	client := events.Client{ID: "c-5", Email: "kim@example.com", Name: "Kim"}
	starts := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	ends := starts.Add(50 * time.Minute)
	for _, a := range []events.Action{
		&events.SigninRequested{Envelope: env("h-1"), Client: client},
		&events.DocumentShared{Envelope: env("h-2"), Client: client, Document: events.Document{ID: "d-1", Title: "Plan"}, ShareID: "s-1"},
		&events.AppointmentScheduled{Envelope: env("h-3"), Client: client, Appointment: events.Appointment{ID: "a-1",
			StartsAt: &starts, EndsAt: &ends, Telehealth: true, Timezone: "UTC"}, Reminders: []string{}},
	} {
		if _, err := events.Publish(ctx, js, a); err != nil {
			t.Fatal(err)
		}
	}
	explain := func() string {
		tl, err := history.Client(ctx, js, devstack.DemoPractice, client.ID)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		tl.Print(&b, time.Now())
		return b.String()
	}
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := explain()
			if ok(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("explain never showed %s:\n%s", what, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out := waitFor("three links sent", func(s string) bool { return strings.Count(s, " sent ") == 3 })
	if strings.Count(out, ": works") != 3 {
		t.Fatalf("all three links should work:\n%s", out)
	}

	if _, err := events.Publish(ctx, js, &events.AppointmentCanceled{Envelope: env("h-4"), Appointment: events.Appointment{ID: "a-1"}}); err != nil {
		t.Fatal(err)
	}
	waitFor("the cancellation", func(s string) bool { return strings.Contains(s, "refused (canceled)") })
	if _, err := events.Publish(ctx, js, &events.ClientLinksRevoked{Envelope: env("h-5"), Client: events.Client{ID: client.ID}, Reason: "lost phone"}); err != nil {
		t.Fatal(err)
	}
	out = waitFor("the revocation", func(s string) bool { return strings.Count(s, "refused (revoked)") == 2 })
	for _, want := range []string{"scope:canceled", "scope:revoked", "revoked: lost phone", "c-5.signin", "c-5.doc.s-1", "c-5.appt.a-1",
		"refused (canceled)", scope.Explain(events.ReasonRevoked)} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}

	t.Log("\n" + out)

	// By link: the appointment's link and its scope's story.
	var linkID string
	for id, scope := range mustClient(t, ctx, st).Scopes {
		if strings.HasSuffix(scope, ".appt.a-1") {
			linkID = id
		}
	}
	tl, err := history.Link(ctx, js, linkID)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tl.Print(&b, time.Now())
	if !strings.Contains(b.String(), "scope:canceled") || strings.Contains(b.String(), "c-5.signin") {
		t.Fatalf("explain --link:\n%s", b.String())
	}
	if _, err := history.Link(ctx, js, "Lnope"); err == nil || !strings.Contains(err.Error(), "was ever issued") {
		t.Fatalf("unknown link: %v", err)
	}
}

func mustClient(t *testing.T, ctx context.Context, st *devstack.Stack) *history.Timeline {
	t.Helper()
	tl, err := history.Client(ctx, st.JetStream(), devstack.DemoPractice, "c-5")
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// TestStatusesSayWhatToDo: every verdict a link can have today comes with
// plain words and the thing to do about it.
func TestStatusesSayWhatToDo(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	hour := time.Hour
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	state := func(link, purpose string, oneTime bool, from, to time.Duration) scope.State {
		return scope.State{LinkID: link, Purpose: purpose, OneTime: oneTime, ValidFrom: now.Add(from), ExpiresAt: now.Add(to)}
	}
	used := state("Lused", events.PurposeSignin, true, -2*hour, hour)
	used.UsedAt = at(-hour)
	revoked := state("Lrev", events.PurposeDocument, true, -2*hour, hour)
	revoked.RevokedAt, revoked.RevokedReason = at(-hour), "lost phone"
	canceled := state("Lcan", events.PurposeTelehealth, false, -2*hour, hour)
	canceled.CanceledAt = at(-hour)
	cases := map[string]struct {
		st            scope.State
		link          string
		mail          *events.LinkEvent
		works         bool
		verdict, todo string
	}{
		"works":           {state("Lok", events.PurposeSignin, true, -hour, hour), "Lok", nil, true, "Works: the client can use it until Wed 2 Dec 2026 13:00 UTC", "Nothing to do"},
		"superseded":      {state("Lnew", events.PurposeSignin, true, -hour, hour), "Lold", nil, false, "a newer link (Lnew) replaced this one", "use the newest email"},
		"used":            {used, "Lused", nil, false, "already used on Wed 2 Dec 2026 11:00 UTC", "Resend: send the client a new sign-in link"},
		"expired":         {state("Lexp", events.PurposeDocument, true, -2*hour, -hour), "Lexp", nil, false, "expired Wed 2 Dec 2026 11:00 UTC", "share the document again"},
		"telehealth over": {state("Ltel", events.PurposeTelehealth, false, -2*hour, -hour), "Ltel", nil, false, "window ended", "reschedule it"},
		"revoked":         {revoked, "Lrev", nil, false, "revoked the client's links (lost phone)", "Resend only if"},
		"canceled":        {canceled, "Lcan", nil, false, "the appointment was canceled", "the appointment was canceled"},
		"not yet valid":   {state("Lsoon", events.PurposeTelehealth, false, hour, 2*hour), "Lsoon", nil, false, "works from Wed 2 Dec 2026 13:00 UTC", "try again from"},
		"undelivered": {state("Lbad", events.PurposeSignin, true, -hour, hour), "Lbad",
			&events.LinkEvent{Type: events.TypeFailed, Permanent: true, Reason: "MessageRejected", At: now}, true, "not delivered (MessageRejected)", "unsuppress it"},
		"retrying": {state("Lretry", events.PurposeSignin, true, -hour, hour), "Lretry",
			&events.LinkEvent{Type: events.TypeFailed, Reason: "throttled", At: now}, true, "will be retried", "Wait a few minutes"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			tl := &history.Timeline{Current: map[string]scope.State{"scope.p.c.x": c.st}, Scopes: map[string]string{c.link: "scope.p.c.x"},
				Issued: map[string]events.LinkEvent{}, Mail: map[string]events.LinkEvent{}}
			if c.mail != nil {
				tl.Mail[c.link] = *c.mail
			}
			st := tl.Statuses(now)
			if len(st) != 1 {
				t.Fatalf("%d statuses", len(st))
			}
			s := st[0]
			if s.Works != c.works || !strings.Contains(s.Verdict, c.verdict) || !strings.Contains(s.Todo, c.todo) || s.Scope != "p.c.x" {
				t.Errorf("got works=%v verdict %q todo %q, want %v, %q, %q", s.Works, s.Verdict, s.Todo, c.works, c.verdict, c.todo)
			}
		})
	}
}

// TestClientWithManyLinks: a client's links are read linksPerRead at a
// time; a client with more (each sign-in writes a new link to its scope)
// still gets all of them, the newest working and the others superseded.
func TestClientWithManyLinks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	const n = 70
	subject := scope.Signin("acme", "c-many")
	now := time.Now().UTC().Truncate(time.Second)
	for i := range n {
		id := fmt.Sprintf("Lmany%02d", i)
		at := now.Add(time.Duration(i) * time.Second)
		exp := at.Add(time.Hour)
		st, _ := json.Marshal(scope.State{Change: scope.ChangeIssued, LinkID: id, Purpose: events.PurposeSignin, OneTime: true,
			ValidFrom: at, ExpiresAt: exp, EventID: fmt.Sprintf("many-%d", i), At: at})
		if _, err := js.Publish(ctx, subject, st); err != nil {
			t.Fatal(err)
		}
		if err := bus.PublishEvent(ctx, js, &events.LinkEvent{EventID: "issued-" + id, Type: events.TypeIssued, LinkID: id,
			PracticeID: "acme", ClientID: "c-many", Purpose: events.PurposeSignin, At: at, ValidFrom: &at, ExpiresAt: &exp}); err != nil {
			t.Fatal(err)
		}
	}
	tl, err := history.Client(ctx, js, "acme", "c-many")
	if err != nil {
		t.Fatal(err)
	}
	statuses := tl.Statuses(now.Add(n * time.Second))
	if len(statuses) != n {
		t.Fatalf("%d links, want %d", len(statuses), n)
	}
	works := 0
	for _, s := range statuses {
		if len(s.Entries) != 2 { // scope:issued and issued
			t.Errorf("%s: %d entries, want 2", s.LinkID, len(s.Entries))
		}
		switch {
		case s.Works:
			works++
			if s.LinkID != fmt.Sprintf("Lmany%02d", n-1) {
				t.Errorf("%s works, want the newest only", s.LinkID)
			}
		case s.Reason != events.ReasonSuperseded:
			t.Errorf("%s: %s, want superseded", s.LinkID, s.Reason)
		}
	}
	if works != 1 {
		t.Errorf("%d links work, want 1", works)
	}
}
