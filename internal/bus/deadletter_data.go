package bus

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublishDeadLetter puts data that did not come from a JetStream message
// (an SQS message of SES feedback) on deadletter.<source>, with the reason
// in HeaderReason, the headers hdr adds (HeaderSource,
// HeaderSourceMsgID) and msgID as its Nats-Msg-Id. Like DeadLetter it
// keeps at most the first 64 KiB of data.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, source, msgID string, data []byte, reason error, hdr nats.Header) error {
	const keep = 64 << 10
	if hdr == nil {
		hdr = nats.Header{}
	}
	hdr.Set(HeaderReason, reason.Error())
	hdr.Set(HeaderOriginalBytes, strconv.Itoa(len(data)))
	if len(data) > keep {
		data = data[:keep]
	}
	if _, err := PublishOnce(ctx, js, DeadLetterPrefix+source, msgID, data, hdr); err != nil {
		return fmt.Errorf("bus: dead letter to %s: %w", source, err)
	}
	return nil
}
