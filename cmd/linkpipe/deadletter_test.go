package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// fakeSES is an SES sender against a sestest.Fake, away from the
// developer's AWS files.
func fakeSES(t *testing.T) (*sestest.Fake, *ses.Sender) {
	t.Helper()
	for _, k := range []string{"AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := sestest.NewFake(t)
	sender, err := ses.New(context.Background(), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	return fake, sender
}

// pipeline runs an issuer and a mailer (sending through sender) on srv
// until the test ends.
func pipeline(t *testing.T, srv *bustest.Server, sender worker.MailerSettings) {
	t.Helper()
	nc, js := srv.Connect(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	dir, err := practice.Open(ctx, js, log)
	if err != nil {
		t.Fatal(err)
	}
	d := worker.Deps{JS: js, NC: nc, Practices: dir, Metrics: prometheus.NewRegistry(), Clock: clock.Real{}, Log: log}
	iss, err := worker.NewIssuer(d, storetest.MustOpen(t, "issuer", issuer.Buckets()...), sender.Keys)
	if err != nil {
		t.Fatal(err)
	}
	m, err := worker.NewMailer(d, sender)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- iss.Run(ctx) }()
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
		dir.Close()
	})
}

// An email SES refused for good is on deadletter.mail; `linkpipe
// deadletter list` shows it with its reason; once the cause is fixed,
// `linkpipe deadletter replay <mail id>` re-drives it past MAIL's
// one-message-per-subject rule and the mail.done marker, and it is sent.
func TestDeadLetterListAndReplaySendsTheEmail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	fake, sender := fakeSES(t)
	fake.FailTo("pat@example.com", sestest.Rejected)
	keys := link.NewKeyring("k1", bytes.Repeat([]byte{3}, 32))
	pipeline(t, srv, worker.MailerSettings{Keys: keys, Sender: sender, From: "links@acme.example", PublicURL: "https://links.example"})
	e := env(map[string]string{"NATS_URL": srv.URL})

	var out bytes.Buffer
	if err := run(ctx, []string{"publish", "signin", "--practice", "acme", "--client", "c-1", "--email", "pat@example.com", "--event-id", "evt-dl"}, e, &out); err != nil {
		t.Fatalf("publish: %v\n%s", err, out.String())
	}
	var letters []bus.Letter
	var err error
	eventually.True(t, 30*time.Second, func() bool {
		letters, err = bus.DeadLetters(ctx, js, bus.DeadLetterPrefix+"mail")
		return err == nil && len(letters) == 1
	}, "the refused email on deadletter.mail")
	mailID := letters[0].ID()
	if !strings.HasSuffix(mailID, "-signin") || letters[0].Source != bus.MailCommandPrefix+mailID {
		t.Fatalf("dead letter %+v", letters[0])
	}

	out.Reset()
	if err := run(ctx, []string{"deadletter", "list"}, e, &out); err != nil {
		t.Fatalf("list: %v\n%s", err, out.String())
	}
	listing := out.String()
	for _, want := range []string{"SEQ", "TIME", "SUBJECT", "REASON", bus.MailCommandPrefix + mailID, "MessageRejected", "suppression list",
		letters[0].Time.UTC().Format(time.RFC3339), "1 dead letter(s)"} {
		if !strings.Contains(listing, want) {
			t.Errorf("list lacks %q:\n%s", want, listing)
		}
	}
	if strings.Contains(listing, "pat@example.com") {
		t.Errorf("list shows the address:\n%s", listing)
	}

	// Replaying before the fix only dead-letters it again; fix it first.
	fake.FailTo("pat@example.com", sestest.Fault{})
	out.Reset()
	if err := run(ctx, []string{"deadletter", "replay", mailID}, e, &out); err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "replayed") {
		t.Errorf("replay output: %s", out.String())
	}
	eventually.True(t, 30*time.Second, func() bool { return len(fake.Accepted()) == 1 }, "the replayed email sent")
	if got := fake.Accepted()[0]; len(got.To) != 1 || got.To[0] != "pat@example.com" || !strings.Contains(got.Text, "https://links.example/l/k1.") {
		t.Errorf("sent %+v", got)
	}
	linkID := strings.TrimSuffix(mailID, "-signin")
	eventually.True(t, 30*time.Second, func() bool {
		_, err := bus.NewReader(js, bus.StreamLinks).Last(ctx, events.LinkSubject(linkID, events.TypeSent))
		return err == nil
	}, "the sent event")
	if letters, err := bus.DeadLetters(ctx, js, ""); err != nil || len(letters) != 0 {
		t.Errorf("after the replay: %d dead letters (%v), want 0", len(letters), err)
	}
	out.Reset()
	if err := run(ctx, []string{"deadletter", "replay", mailID}, e, &out); err == nil || !strings.Contains(err.Error(), "no dead letter") {
		t.Errorf("second replay: %v", err)
	}
}

// --all replays every dead letter: a poison action goes back to its
// subject (ACTIONS) and, still poison, is dead-lettered again as a new
// letter; the old one is gone.
func TestDeadLetterReplayAll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	keys := link.NewKeyring("k1", bytes.Repeat([]byte{3}, 32))
	_, sender := fakeSES(t)
	pipeline(t, srv, worker.MailerSettings{Keys: keys, Sender: sender, From: "links@acme.example", PublicURL: "https://links.example"})
	e := env(map[string]string{"NATS_URL": srv.URL})
	bad := `{"event_id":"evt-poison","practice_id":"acme","client":{"id":"c-2","email":"sam@example.com"},"return_to":"//evil.example"}`
	if _, err := js.Publish(ctx, events.SubjectSigninRequested, []byte(bad)); err != nil {
		t.Fatal(err)
	}
	var letters []bus.Letter
	var err error
	eventually.True(t, 30*time.Second, func() bool {
		letters, err = bus.DeadLetters(ctx, js, "")
		return err == nil && len(letters) == 1
	}, "the poison action dead-lettered")
	first := letters[0]
	if first.Subject != bus.DeadLetterPrefix+"actions" || first.Source != events.SubjectSigninRequested || first.ID() != "evt-poison" {
		t.Fatalf("dead letter %+v", first)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"deadletter", "replay", "--all"}, e, &out); err != nil {
		t.Fatalf("replay --all: %v\n%s", err, out.String())
	}
	eventually.True(t, 30*time.Second, func() bool {
		letters, err = bus.DeadLetters(ctx, js, "")
		return err == nil && len(letters) == 1 && letters[0].Seq != first.Seq
	}, "the replayed action dead-lettered again")
	if _, err := bus.DeadLetterAt(ctx, js, first.Seq); !errors.Is(err, bus.ErrNotFound) {
		t.Errorf("the replayed letter is still there: %v", err)
	}
	var got map[string]any
	if json.Unmarshal(letters[0].Data, &got) != nil || got["event_id"] != "evt-poison" || !strings.Contains(letters[0].Reason, "return_to") {
		t.Errorf("second letter %+v", letters[0])
	}
	if err := run(ctx, []string{"deadletter", "replay"}, e, io.Discard); !errors.Is(err, worker.ErrConfig) {
		t.Errorf("replay without names or --all: %v", err)
	}
}
