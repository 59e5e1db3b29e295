package bus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
)

// PublishEvent publishes a lifecycle event to links.<link_id>.<type> once:
// its EventID is the Nats-Msg-Id, so a retry within the dedupe window is
// absorbed by JetStream. Every lifecycle event linkpipe publishes goes
// through here.
func PublishEvent(ctx context.Context, js jetstream.JetStream, ev *events.LinkEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("bus: encode %s: %w", ev.Subject(), err)
	}
	if _, err := PublishOnce(ctx, js, ev.Subject(), ev.EventID, data, nil); err != nil {
		return err
	}
	return nil
}
