package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/nats-io/nats.go/jetstream"
)

var update = flag.Bool("update", false, "rewrite golden files")

func ts(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &t
}

var client = events.Client{ID: "c-7", Email: "pat@example.com", Name: "Pat Doe", Locale: "es-MX"}

// samples are one valid value of every action; their JSON is pinned by
// testdata/golden/<subject>.json.
func samples() []events.Action {
	env := func(id string) events.Envelope { return events.Envelope{EventID: id, PracticeID: "acme"} }
	return []events.Action{
		&events.SigninRequested{Envelope: env("evt-1"), Client: client, ReturnTo: "/messages?x=1"},
		&events.DocumentShared{Envelope: env("evt-2"), Client: client,
			Document: events.Document{ID: "doc-9", Title: "Intake form"}, ShareID: "share-1"},
		&events.AppointmentScheduled{Envelope: env("evt-3"), Client: client,
			Appointment: events.Appointment{ID: "appt-1", StartsAt: ts("2026-12-01T15:00:00Z"),
				EndsAt: ts("2026-12-01T15:50:00Z"), Telehealth: true, ClinicianName: "Dr. Lee",
				Timezone: "America/Chicago"}, Reminders: []string{"72h", "24h"}},
		&events.AppointmentRescheduled{Envelope: env("evt-4"), Appointment: events.Appointment{ID: "appt-1",
			StartsAt: ts("2026-12-02T15:00:00Z"), EndsAt: ts("2026-12-02T15:50:00Z")}},
		&events.AppointmentCanceled{Envelope: env("evt-5"), Appointment: events.Appointment{ID: "appt-1"}},
		&events.AppointmentReminder{Envelope: env("evt-6"), Appointment: events.Appointment{ID: "appt-1"}},
		&events.ClientLinksRevoked{Envelope: env("evt-7"), Client: events.Client{ID: "c-7"}, Reason: "lost phone"},
		&events.RenewalRequested{Envelope: env("renew-9"), LinkID: "Lx3a9"},
		&events.AddressUnsuppressed{Envelope: env("unsup-1"), Email: "pat@example.com"},
		&events.PracticeUpdated{Envelope: env("evt-8"),
			Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "front@acme.example", PortalURL: "https://portal.acme.example",
				Timezone: "America/Chicago", Locale: "es", LogoURL: "https://cdn.acme.example/logo.png", AccentColor: "#1f6f5c"},
			Policy: &events.Policy{SigninTTL: "2h", DocumentTTL: "48h", TelehealthGrace: "15m", Reminders: []string{"24h"}}},
	}
}

func TestGoldenWireFormat(t *testing.T) {
	for _, a := range samples() {
		t.Run(a.Subject(), func(t *testing.T) {
			got, err := json.MarshalIndent(a, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", a.Subject()+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./events -update once)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wire format changed:\n got %s\nwant %s", got, want)
			}
			// The golden file decodes back into an equal, valid action.
			back, err := events.Decode(a.Subject(), want)
			if err != nil {
				t.Fatalf("decode golden: %v", err)
			}
			again, _ := json.MarshalIndent(back, "", "  ")
			if !bytes.Equal(append(again, '\n'), want) {
				t.Fatalf("round trip differs: %s", again)
			}
		})
	}
}

func TestLifecycleGolden(t *testing.T) {
	ev := events.LinkEvent{EventID: "issued-Labc", Type: events.TypeIssued, LinkID: "Labc", PracticeID: "acme",
		ClientID: "c-7", Purpose: events.PurposeSignin, At: *ts("2026-11-24T10:00:00Z"), CauseEventID: "evt-1",
		ReturnTo: "/messages", ValidFrom: ts("2026-11-24T10:00:00Z"), ExpiresAt: ts("2026-11-25T10:00:00Z")}
	got, _ := json.Marshal(ev)
	want := `{"event_id":"issued-Labc","type":"issued","link_id":"Labc","practice_id":"acme","client_id":"c-7","purpose":"signin","at":"2026-11-24T10:00:00Z","cause_event_id":"evt-1","return_to":"/messages","valid_from":"2026-11-24T10:00:00Z","expires_at":"2026-11-25T10:00:00Z"}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if ev.Subject() != "links.Labc.issued" {
		t.Fatal(ev.Subject())
	}
	bounced := events.LinkEvent{EventID: "bounced-Labc-signin-fb1", Type: events.TypeBounced, LinkID: "Labc", PracticeID: "acme",
		ClientID: "c-7", Purpose: events.PurposeSignin, At: *ts("2026-11-24T10:02:00Z"), Reason: events.BouncePermanent,
		Detail: "NoEmail: smtp; 550 5.1.1 user unknown", MailID: "Labc-signin", MailKind: "signin", MessageID: "0100-ses"}
	got, _ = json.Marshal(bounced)
	want = `{"event_id":"bounced-Labc-signin-fb1","type":"bounced","link_id":"Labc","practice_id":"acme","client_id":"c-7","purpose":"signin","at":"2026-11-24T10:02:00Z","reason":"permanent","detail":"NoEmail: smtp; 550 5.1.1 user unknown","mail_id":"Labc-signin","mail_kind":"signin","message_id":"0100-ses"}`
	if string(got) != want || bounced.Subject() != "links.Labc.bounced" {
		t.Fatalf("got  %s %s\nwant %s", got, bounced.Subject(), want)
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	valid := `{"event_id":"e1","practice_id":"p1","client":{"id":"c1","email":"a@b.co","name":"A"}}`
	big := `{"event_id":"e1","practice_id":"p1","client":{"id":"c1","email":"a@b.co","name":"` + strings.Repeat("x", 1<<20) + `"}}`
	cases := []struct {
		name, subject, data string
		sentinel            error
		field               string
	}{
		{"malformed", events.SubjectSigninRequested, `{"event_id":`, events.ErrMalformed, ""},
		{"not an object", events.SubjectSigninRequested, `[1,2]`, events.ErrMalformed, ""},
		{"trailing data", events.SubjectSigninRequested, valid + `{}`, events.ErrMalformed, ""},
		{"unknown field", events.SubjectSigninRequested, strings.Replace(valid, `"event_id"`, `"evil":1,"event_id"`, 1), events.ErrMalformed, ""},
		{"wrong type", events.SubjectSigninRequested, strings.Replace(valid, `"e1"`, `5`, 1), events.ErrMalformed, ""},
		{"too large", events.SubjectSigninRequested, big, events.ErrTooLarge, ""},
		{"unknown subject", "actions.nope", valid, events.ErrUnknownSubject, ""},
		{"version 2", events.SubjectSigninRequested, strings.Replace(valid, `{`, `{"version":2,`, 1), events.ErrUnsupportedVersion, ""},
		{"missing event id", events.SubjectSigninRequested, strings.Replace(valid, `"event_id":"e1",`, ``, 1), nil, "event_id"},
		{"bad id chars", events.SubjectSigninRequested, strings.Replace(valid, `"p1"`, `"p 1"`, 1), nil, "practice_id"},
		{"missing email", events.SubjectSigninRequested, strings.Replace(valid, `"email":"a@b.co",`, ``, 1), nil, "client.email"},
		{"invalid email", events.SubjectSigninRequested, strings.Replace(valid, `a@b.co`, `not-an-email`, 1), nil, "client.email"},
		{"display name email", events.SubjectSigninRequested, strings.Replace(valid, `a@b.co`, `A \u003ca@b.co\u003e`, 1), nil, "client.email"},
		{"CRLF in email", events.SubjectSigninRequested, strings.Replace(valid, `a@b.co`, `a@b.co\r\nBcc: x@evil.co`, 1), nil, "client.email"},
		{"CRLF in name", events.SubjectSigninRequested, strings.Replace(valid, `"A"`, `"A\r\nBcc: x@evil.co"`, 1), nil, "client.name"},
		{"absolute return_to", events.SubjectSigninRequested, strings.Replace(valid, `}}`, `},"return_to":"https://evil.example/"}`, 1), nil, "return_to"},
		{"protocol-relative return_to", events.SubjectSigninRequested, strings.Replace(valid, `}}`, `},"return_to":"//evil.example/"}`, 1), nil, "return_to"},
		{"backslash return_to", events.SubjectSigninRequested, strings.Replace(valid, `}}`, `},"return_to":"/\\evil.example/"}`, 1), nil, "return_to"},
		{"policy out of bounds", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co"},"policy":{"signin_ttl":"100h"}}`, nil, "policy.signin_ttl"},
		{"grace out of bounds", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co"},"policy":{"telehealth_grace":"3h"}}`, nil, "policy.telehealth_grace"},
		{"portal not a URL", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"javascript:alert(1)"}}`, nil, "practice.portal_url"},
		{"appointment ends before start", events.SubjectAppointmentScheduled, `{"event_id":"e","practice_id":"p","client":{"id":"c","email":"a@b.co"},"appointment":{"id":"a","starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-01T14:00:00Z","timezone":"UTC"}}`, nil, "appointment.ends_at"},
		{"unknown zone", events.SubjectAppointmentScheduled, `{"event_id":"e","practice_id":"p","client":{"id":"c","email":"a@b.co"},"appointment":{"id":"a","starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-01T16:00:00Z","timezone":"Mars/Olympus"}}`, nil, "appointment.timezone"},
		{"unsuppress without email", events.SubjectAddressUnsuppressed, `{"event_id":"e","practice_id":"p"}`, nil, "email"},
		{"unsuppress bad email", events.SubjectAddressUnsuppressed, `{"event_id":"e","practice_id":"p","email":"a@b.co\r\nBcc: x@evil.co"}`, nil, "email"},
		{"client locale not a tag", events.SubjectSigninRequested, strings.Replace(valid, `"name":"A"`, `"name":"A","locale":"spanish please"`, 1), nil, "client.locale"},
		{"client locale too long", events.SubjectSigninRequested, strings.Replace(valid, `"name":"A"`, `"name":"A","locale":"es-`+strings.Repeat("abcdefgh-", 5)+`x"`, 1), nil, "client.locale"},
		{"client locale CRLF", events.SubjectSigninRequested, strings.Replace(valid, `"name":"A"`, `"name":"A","locale":"es\r\nX"`, 1), nil, "client.locale"},
		{"practice locale", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","locale":"es_ES"}}`, nil, "practice.locale"},
		{"practice zone", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","timezone":"Mars/Olympus"}}`, nil, "practice.timezone"},
		{"logo over http", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","logo_url":"http://x.co/l.png"}}`, nil, "practice.logo_url"},
		{"logo javascript", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","logo_url":"javascript:alert(1)"}}`, nil, "practice.logo_url"},
		{"logo with userinfo", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","logo_url":"https://u:p@x.co/l.png"}}`, nil, "practice.logo_url"},
		{"logo host breaks the CSP", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","logo_url":"https://x.co;script-src/l.png"}}`, nil, "practice.logo_url"},
		{"logo relative", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","logo_url":"/l.png"}}`, nil, "practice.logo_url"},
		{"accent not hex", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","accent_color":"red"}}`, nil, "practice.accent_color"},
		{"accent CSS injection", events.SubjectPracticeUpdated, `{"event_id":"e","practice_id":"p","practice":{"name":"n","reply_to":"r@p.co","portal_url":"https://x.co","accent_color":"#fff;background:url(x)"}}`, nil, "practice.accent_color"},
		{"bad reminder", events.SubjectAppointmentScheduled, `{"event_id":"e","practice_id":"p","client":{"id":"c","email":"a@b.co"},"appointment":{"id":"a","starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-01T16:00:00Z","timezone":"UTC"},"reminders":["soon"]}`, nil, "reminders[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := events.Decode(c.subject, []byte(c.data))
			if err == nil {
				t.Fatal("accepted")
			}
			if c.sentinel != nil && !errors.Is(err, c.sentinel) {
				t.Fatalf("got %v, want %v", err, c.sentinel)
			}
			if c.field != "" {
				var fe *events.FieldError
				if !errors.As(err, &fe) || fe.Field != c.field {
					t.Fatalf("got %v, want a FieldError on %s", err, c.field)
				}
			}
		})
	}
	if _, err := events.Decode(events.SubjectSigninRequested, []byte(valid)); err != nil {
		t.Fatalf("valid refused: %v", err)
	}
}

func TestPublishSetsMsgIDAndDedupes(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a := samples()[0]
	first, err := events.Publish(ctx, js, a)
	if err != nil {
		t.Fatal(err)
	}
	second, err := events.Publish(ctx, js, a)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("republish not deduplicated: %+v vs %+v", first, second)
	}
	s, _ := js.Stream(ctx, events.StreamActions)
	m, err := s.GetLastMsgForSubject(ctx, a.Subject())
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(jetstream.MsgIDHeader) != "evt-1" {
		t.Fatalf("Nats-Msg-Id = %q", m.Header.Get(jetstream.MsgIDHeader))
	}
	if _, err := events.Publish(ctx, js, &events.SigninRequested{}); err == nil {
		t.Fatal("invalid action published")
	}
}

// lifecycleSamples are one event of every lifecycle type, as linkpipe
// publishes them; their JSON is pinned by testdata/golden/links.<type>.json
// (which the JSON Schemas are checked against).
func lifecycleSamples() []events.LinkEvent {
	base := func(typ string) events.LinkEvent {
		return events.LinkEvent{EventID: typ + "-Labc", Type: typ, LinkID: "Labc", PracticeID: "acme",
			ClientID: "c-7", Purpose: events.PurposeTelehealth, At: *ts("2026-11-24T10:00:00Z")}
	}
	issued := base(events.TypeIssued)
	issued.CauseEventID, issued.AppointmentID, issued.Supersedes = "evt-3", "appt-1", "Lold"
	issued.ValidFrom, issued.ExpiresAt = ts("2026-11-24T10:00:00Z"), ts("2026-12-01T16:05:00Z")
	sent := base(events.TypeSent)
	sent.MailID, sent.MailKind, sent.MessageID = "Labc-confirmation", "confirmation", "0100018c-ses-id"
	failed := base(events.TypeFailed)
	failed.MailID, failed.MailKind, failed.Reason, failed.Permanent = "Labc-confirmation", "confirmation", "MessageRejected: address is on the suppression list", true
	touched := base(events.TypeTouched)
	touched.UserAgent, touched.Scanner = "Mozilla/5.0 (compatible; SafeLinks)", true
	used := base(events.TypeUsed)
	used.CauseEventID, used.UserAgent = "evt-3", "Mozilla/5.0 (iPhone)"
	expired := base(events.TypeExpired)
	expired.Reason, expired.UserAgent = events.ReasonCanceled, "Mozilla/5.0 (iPhone)"
	revoked := base(events.TypeRevoked)
	revoked.CauseEventID, revoked.Reason = "evt-5", events.ReasonCanceled
	delivered := base(events.TypeDelivered)
	delivered.MailID, delivered.MailKind, delivered.MessageID = "Labc-confirmation", "confirmation", "0100018c-ses-id"
	bounced := base(events.TypeBounced)
	bounced.MailID, bounced.MailKind, bounced.MessageID = "Labc-confirmation", "confirmation", "0100018c-ses-id"
	bounced.Reason, bounced.Detail = events.BouncePermanent, "General: smtp; 550 5.1.1 user unknown"
	complained := base(events.TypeComplained)
	complained.MailID, complained.MailKind, complained.MessageID, complained.Detail = "Labc-confirmation", "confirmation", "0100018c-ses-id", "abuse"
	return []events.LinkEvent{issued, sent, failed, touched, used, expired, revoked, delivered, bounced, complained}
}

func TestLifecycleGoldenFiles(t *testing.T) {
	for _, ev := range lifecycleSamples() {
		t.Run(ev.Type, func(t *testing.T) {
			got, err := json.MarshalIndent(&ev, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", "links."+ev.Type+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./events -run Golden -update once)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wire format changed:\n got %s\nwant %s", got, want)
			}
		})
	}
}
