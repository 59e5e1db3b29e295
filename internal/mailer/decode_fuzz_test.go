package mailer

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// fakeMsg is the part of a jetstream.Msg decodeCommand reads; any other
// method panics (nil embedded interface), which the fuzzer would report.
type fakeMsg struct {
	jetstream.Msg
	subject string
	data    []byte
}

func (m *fakeMsg) Subject() string { return m.subject }
func (m *fakeMsg) Data() []byte    { return m.data }

// FuzzDecodeCommand fuzzes the mailer's decoding of a MAIL message into a
// mail command (decodeCommand, the real path of the consume loop).
// Properties:
//   - it never panics, and a refusal is errPoison (dead-lettered, never
//     retried);
//   - a command that decodes has a contract mail id, arrived on
//     mail.cmd.<its mail id>, names a valid practice, a kind and a
//     recipient, and carries what re-derives its link when it names one;
//   - it round-trips: re-encoded on the same subject it decodes to a
//     command that encodes to the same bytes.
//
// With onItsSubject set, the subject is mail.cmd.<the payload's mail_id>
// (read leniently), so the fuzzer reaches past the subject check.
func FuzzDecodeCommand(f *testing.F) {
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	good := mail.Command{MailID: "Labc-signin", Kind: mail.KindSignin, PracticeID: "acme",
		To:     events.Client{ID: "c-1", Email: "pat@example.com", Name: "Pat"},
		LinkID: "Labc", Kid: "k1", Purpose: events.PurposeSignin, Scope: "scope.acme.c-1.signin", MintEventID: "evt-1",
		ValidFrom: t0, ExpiresAt: t0.Add(24 * time.Hour), CauseEventID: "evt-1", At: t0}
	data, err := json.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bus.MailCommandPrefix+good.MailID, data, false)
	f.Add(bus.MailCommandPrefix+"other", data, false)
	f.Add("", data, true)
	f.Add("", []byte(`{"mail_id":"m1","kind":"signin","practice_id":"acme","to":{"id":"c","email":"a@b.example\r\nBcc: x@y.example"}}`), true)
	f.Add("", []byte(`{"mail_id":"m1\r\n","kind":"signin","practice_id":"acme","to":{"email":"a@b.example"}}`), true)
	f.Add("", []byte(`{"mail_id":"m1","kind":"signin","practice_id":"acme","to":{"email":"a@b.example"},"link_id":"Lx"}`), true)
	f.Add("", []byte(`{"mail_id":"m1","kind":"x","practice_id":"acme","to":{"email":"a"},"at":"not a time"}`), true)
	f.Add(bus.MailCommandPrefix+"m1", []byte("\x00"), false)
	f.Add(bus.MailCommandPrefix+"m1", []byte(`null`), false)

	f.Fuzz(func(t *testing.T, subject string, data []byte, onItsSubject bool) {
		if onItsSubject {
			var id struct {
				MailID string `json:"mail_id"`
			}
			_ = json.Unmarshal(data, &id)
			subject = bus.MailCommandPrefix + id.MailID
		}
		cmd, err := decodeCommand(&fakeMsg{subject: subject, data: data})
		if err != nil {
			if cmd != nil {
				t.Fatalf("decodeCommand returned both %+v and %v", cmd, err)
			}
			if !errors.Is(err, errPoison) {
				t.Fatalf("refusal is not errPoison: %v", err)
			}
			return
		}
		checkCommand(t, subject, cmd)

		out, err := json.Marshal(cmd)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		again, err := decodeCommand(&fakeMsg{subject: subject, data: out})
		if err != nil {
			t.Fatalf("re-encoded command refused: %v\n%s", err, out)
		}
		out2, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the command:\n%s\n%s", out, out2)
		}
	})
}

func checkCommand(t *testing.T, subject string, cmd *mail.Command) {
	t.Helper()
	switch {
	case !events.ValidID(cmd.MailID):
		t.Fatalf("accepted mail id %q", cmd.MailID)
	case subject != bus.MailCommandPrefix+cmd.MailID:
		t.Fatalf("accepted mail id %q on subject %q", cmd.MailID, subject)
	case !events.ValidID(cmd.PracticeID):
		t.Fatalf("accepted practice id %q", cmd.PracticeID)
	case cmd.Kind == "" || cmd.To.Email == "":
		t.Fatalf("accepted a command without kind or recipient: %+v", cmd)
	case cmd.LinkID != "" && (cmd.Kid == "" || cmd.Purpose == "" || cmd.MintEventID == ""):
		t.Fatalf("accepted link %q that cannot be re-derived: %+v", cmd.LinkID, cmd)
	}
}
