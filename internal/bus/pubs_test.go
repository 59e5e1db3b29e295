package bus_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// TestPublishAnswersAsJetStreamDoes: bus.Publish stores and returns the
// acknowledgement, reports a duplicate, gives a refused conditional write
// as the APIError package jetstream gives, and a subject no stream takes
// as jetstream.ErrNoStreamResponse.
func TestPublishAnswersAsJetStreamDoes(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PUBTEST", Subjects: []string{"pubtest.>"}}); err != nil {
		t.Fatal(err)
	}
	msg := func(hdr ...string) *nats.Msg {
		m := &nats.Msg{Subject: "pubtest.a", Data: []byte("x"), Header: nats.Header{}}
		for i := 0; i+1 < len(hdr); i += 2 {
			m.Header.Set(hdr[i], hdr[i+1])
		}
		return m
	}
	ack, err := bus.Publish(ctx, js, msg(jetstream.MsgIDHeader, "one"))
	if err != nil || ack.Stream != "PUBTEST" || ack.Sequence != 1 || ack.Duplicate {
		t.Fatalf("first publish: %+v %v", ack, err)
	}
	if ack, err = bus.Publish(ctx, js, msg(jetstream.MsgIDHeader, "one")); err != nil || !ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("same Nats-Msg-Id: %+v %v, want the duplicate of 1", ack, err)
	}
	_, err = bus.Publish(ctx, js, msg(jetstream.ExpectedLastSubjSeqHeader, "0"))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("stale conditional write: %v, want the APIError 10071", err)
	}
	if ack, err = bus.Publish(ctx, js, msg(jetstream.ExpectedLastSubjSeqHeader, "1")); err != nil || ack.Sequence != 2 {
		t.Fatalf("conditional write: %+v %v", ack, err)
	}
	if _, err := bus.Publish(ctx, js, &nats.Msg{Subject: "nostream.x", Data: []byte("x")}); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("no stream: %v, want ErrNoStreamResponse", err)
	}
}
