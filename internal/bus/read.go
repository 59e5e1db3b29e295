package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reader reads the last message of subjects of one stream with JetStream
// direct get (any replica answers). The stream handle is looked up once.
type Reader struct {
	js     jetstream.JetStream
	stream string

	mu sync.Mutex
	s  jetstream.Stream
}

// NewReader returns a Reader of stream.
func NewReader(js jetstream.JetStream, stream string) *Reader {
	return &Reader{js: js, stream: stream}
}

// Stream returns the stream's handle (looked up once).
func (r *Reader) Stream(ctx context.Context) (jetstream.Stream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s != nil {
		return r.s, nil
	}
	s, err := r.js.Stream(ctx, r.stream)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", r.stream, err)
	}
	r.s = s
	return s, nil
}

// Last returns the last message on subj, or ErrNotFound.
func (r *Reader) Last(ctx context.Context, subj string) (*jetstream.RawStreamMsg, error) {
	s, err := r.Stream(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, subj)
		}
		return nil, fmt.Errorf("bus: get last %s: %w", subj, err)
	}
	return m, nil
}

// LastJSON decodes the last message on subj into v and returns its sequence.
func (r *Reader) LastJSON(ctx context.Context, subj string, v any) (uint64, error) {
	m, err := r.Last(ctx, subj)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return 0, fmt.Errorf("bus: decode %s@%d: %w", subj, m.Sequence, err)
	}
	return m.Sequence, nil
}

// FirstJSON decodes the first message still kept on subj into v and
// returns its sequence, or ErrNotFound. For a subject whose first record
// is the authoritative one (links.<id>.issued: the link's binding to its
// client and scope), a later message on the same subject is never
// trusted.
func (r *Reader) FirstJSON(ctx context.Context, subj string, v any) (uint64, error) {
	s, err := r.Stream(ctx)
	if err != nil {
		return 0, err
	}
	m, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, fmt.Errorf("%w: %s", ErrNotFound, subj)
		}
		return 0, fmt.Errorf("bus: get first %s: %w", subj, err)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return 0, fmt.Errorf("bus: decode %s@%d: %w", subj, m.Sequence, err)
	}
	return m.Sequence, nil
}

// Subjects lists the subjects of the stream matching filter (wildcards
// allowed) with their message counts.
func (r *Reader) Subjects(ctx context.Context, filter string) (map[string]uint64, error) {
	s, err := r.Stream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("bus: subjects %s: %w", filter, err)
	}
	return info.State.Subjects, nil
}

// DeadLetter copies a poison message to deadletter.<source> with the reason
// in a header and the body, so it is kept and explained but never blocks
// its queue. The caller acks (terms) the original afterwards.
func DeadLetter(ctx context.Context, js jetstream.JetStream, source string, msg jetstream.Msg, reason error) error {
	const keep = 64 << 10
	data := msg.Data()
	hdr := nats.Header{}
	hdr.Set(HeaderReason, reason.Error())
	hdr.Set(HeaderSource, msg.Subject())
	hdr.Set(HeaderOriginalBytes, strconv.Itoa(len(data)))
	if md, err := msg.Metadata(); err == nil {
		hdr.Set(HeaderSourceSeq, strconv.FormatUint(md.Sequence.Stream, 10))
		hdr.Set(jetstream.MsgIDHeader, "dl-"+source+"-"+strconv.FormatUint(md.Sequence.Stream, 10))
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		hdr.Set(HeaderSourceMsgID, id)
	}
	if len(data) > keep {
		data = data[:keep]
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: DeadLetterPrefix + source, Header: hdr, Data: data}); err != nil {
		return fmt.Errorf("bus: dead letter from %s: %w", msg.Subject(), err)
	}
	return nil
}

// ReadAll returns every message of stream matching the filters (all of
// them without filters), oldest first, read with an ordered consumer.
func ReadAll(ctx context.Context, js jetstream.JetStream, stream string, filters ...string) ([]jetstream.Msg, error) {
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if err != nil {
		return nil, fmt.Errorf("bus: read %s: %w", stream, err)
	}
	var out []jetstream.Msg
	for {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("bus: read %s: %w", stream, err)
		}
		n := 0
		pending := uint64(0)
		for m := range batch.Messages() {
			out = append(out, m)
			n++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("bus: read %s: %w", stream, err)
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}
