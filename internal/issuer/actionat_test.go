package issuer_test

import (
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// A mail command carries when its action reached ACTIONS (JetStream's
// timestamp), where the mailer's action-to-sent histogram starts.
func TestMailCommandCarriesTheActionsTime(t *testing.T) {
	e := newEnv(t)
	e.start()
	seq := e.publish(signin("evt-at", "ada"))
	e.waitIdle()
	stream, err := e.js.Stream(e.ctx, bus.StreamActions)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(e.ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := e.mailCmd(e.linkIDOf(events.PurposeSignin, "acme", "evt-at") + "-" + mail.KindSignin)
	if !cmd.ActionAt.Equal(raw.Time) {
		t.Fatalf("command action_at %v, want the action's JetStream time %v", cmd.ActionAt, raw.Time)
	}
}
