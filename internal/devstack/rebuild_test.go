package devstack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// The bbolt files are safe to lose (docs/operations.md): JetStream is the
// truth. With the issuer's ledger and the mailer's file deleted, a
// restarted stack still redeems the links it issued before, refuses a
// used one as used, and an action delivered again (its event id
// republished past the dedupe window) yields the same link and no second
// email.
func TestLosingTheBboltFilesLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fake := sestest.NewFake(t)
	sender, err := ses.New(ctx, fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func() *devstack.Stack {
		st, err := devstack.Start(ctx, devstack.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSPort: -1,
			Sender: sender, From: "no-reply@linkpipe.example"})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := start()
	signin := func(js jetstream.JetStream, eventID, client string) *events.SigninRequested {
		a := &events.SigninRequested{
			Envelope: events.Envelope{EventID: eventID, PracticeID: devstack.DemoPractice},
			Client:   events.Client{ID: client, Email: client + "@example.com", Name: "Pat"},
		}
		if _, err := events.Publish(ctx, js, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := signin(st.JetStream(), "rebuild-1", "client-a")
	signin(st.JetStream(), "rebuild-2", "client-b")
	linkTo := func(addr string) string {
		for _, e := range fake.Accepted() {
			if len(e.To) == 1 && e.To[0] == addr {
				return linkRe.FindString(e.Text)
			}
		}
		return ""
	}
	eventually.True(t, 30*time.Second, func() bool { return linkTo("client-a@example.com") != "" && linkTo("client-b@example.com") != "" },
		"both emails")
	linkA, linkB := linkTo("client-a@example.com"), linkTo("client-b@example.com")
	c := noRedirect()
	if resp, _ := do(t, c, http.MethodPost, linkA); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("redeem A before: %d", resp.StatusCode)
	}
	oldURL := st.URL
	st.Close()

	for _, f := range []string{"issuer.db", "mailer.db"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatalf("remove %s: %v", f, err)
		}
	}
	st = start()
	t.Cleanup(func() { st.Close() })
	rebase := func(u string) string { return st.URL + u[len(oldURL):] }

	// The same action again, as if redelivered past the dedupe window
	// (another Nats-Msg-Id): no ledger remembers it.
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: events.SubjectSigninRequested, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "rebuild-1-again")
	if _, err := st.JetStream().PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// A fresh action after it, to know the issuer got past the replay.
	signin(st.JetStream(), "rebuild-3", "client-c")
	eventually.True(t, 30*time.Second, func() bool { return linkTo("client-c@example.com") != "" }, "the email of a new action")

	if resp, body := do(t, c, http.MethodPost, rebase(linkB)); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("link B after losing the bbolt files: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, c, http.MethodPost, rebase(linkA)); resp.StatusCode != http.StatusGone ||
		!hasReason(body, "used") {
		t.Errorf("used link A after losing the bbolt files: %d, want 410 used", resp.StatusCode)
	}
	n := 0
	for _, e := range fake.Accepted() {
		if len(e.To) == 1 && e.To[0] == "client-a@example.com" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("client A got %d emails; the replayed action must not send another", n)
	}
	if got := len(fake.Accepted()); got != 3 {
		t.Errorf("%d emails in all, want 3", got)
	}
}

func hasReason(body, reason string) bool {
	return strings.Contains(body, `name="linkpipe-reason" content="`+reason+`"`)
}
