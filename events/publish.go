package events

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MsgPublisher is the part of jetstream.JetStream that Publish needs.
type MsgPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Marshal validates an action and returns its wire form.
func Marshal(a Action) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("events: marshal %s: %w", a.Subject(), err)
	}
	if len(data) > MaxEventSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), MaxEventSize)
	}
	return data, nil
}

// Publish validates an action and publishes it to its subject with
// Nats-Msg-Id set to its event id, so that JetStream drops a re-publish
// within the stream's duplicate window (linkpipe itself makes the same event
// id yield one link even after that window).
func Publish(ctx context.Context, js MsgPublisher, a Action) (*jetstream.PubAck, error) {
	data, err := Marshal(a)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(a.Subject())
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, a.envelope().EventID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("events: publish %s %s: %w", a.Subject(), a.envelope().EventID, err)
	}
	return ack, nil
}
