// Package recipient owns the address on record of each link: who a link's
// emails go to. The issuer records it when it mints a link (and when an
// appointment's client details change); the mailer sends a link only to
// the address recorded for that link, whatever a mail command says, and a
// renewal is resolved to it, never to an address typed by the clicker.
//
// Records live in the JetStream key-value bucket bus.BucketRecipients,
// keyed by link id, so every replica sees them; the bucket also keeps each
// client's current address (the one the newest action for the client
// named, key client.<practice>.<client>), which is where a renewal goes:
// an old link mailed to an address since corrected must not bring a new
// link back to it. Addresses are kept there
// and in queued mail commands only: lifecycle events carry client ids,
// never addresses or names, and a record can be deleted (erasure) without
// touching the streams that can never be purged.
package recipient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// ErrNotFound: no address is on record for the link.
var ErrNotFound = errors.New("recipient: no address on record")

// Book reads and writes the records. It is safe for concurrent use.
type Book struct{ b *bus.Bucket }

// NewBook returns a Book over the bucket of js (created by bus.Setup).
func NewBook(js jetstream.JetStream) *Book {
	return &Book{b: bus.NewBucket(js, bus.BucketRecipients)}
}

func (b *Book) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.b.KV(ctx)
	if err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	return kv, nil
}

// Put records to as the address of linkID (last write wins).
func (b *Book) Put(ctx context.Context, linkID string, to events.Client) error {
	if !events.ValidID(linkID) {
		return fmt.Errorf("recipient: bad link id %q", linkID)
	}
	return b.put(ctx, linkID, to)
}

func (b *Book) put(ctx context.Context, key string, to events.Client) error {
	kv, err := b.bucket(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(&to)
	if err != nil {
		return fmt.Errorf("recipient: encode: %w", err)
	}
	if _, err := kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("recipient: record %s: %w", key, err)
	}
	return nil
}

// clientKey is the key of a client's current address.
func clientKey(practiceID, clientID string) string { return "client." + practiceID + "." + clientID }

// clientRecord is a client's current address and the ACTIONS sequence of
// the action that named it.
type clientRecord struct {
	events.Client
	Seq uint64 `json:"action_seq"`
}

// PutClient records to as the client's current address, named by the
// action at ACTIONS sequence seq, unless a newer action's address is
// recorded already (actions handled out of order never bring an older
// address back). The write is conditional on the record's revision.
func (b *Book) PutClient(ctx context.Context, practiceID string, to events.Client, seq uint64) error {
	if !events.ValidID(practiceID) || !events.ValidID(to.ID) {
		return fmt.Errorf("recipient: bad client %q of practice %q", to.ID, practiceID)
	}
	kv, err := b.bucket(ctx)
	if err != nil {
		return err
	}
	key := clientKey(practiceID, to.ID)
	data, err := json.Marshal(&clientRecord{Client: to, Seq: seq})
	if err != nil {
		return fmt.Errorf("recipient: encode: %w", err)
	}
	for range maxAttempts {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, key, data)
		case err != nil:
			return fmt.Errorf("recipient: read %s: %w", key, err)
		default:
			var cur clientRecord
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Seq >= seq {
				return nil // a newer (or this) action's address is recorded
			}
			_, err = kv.Update(ctx, key, data, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("recipient: record %s: %w", key, err)
		}
	}
	return fmt.Errorf("recipient: record %s: too many concurrent writers", key)
}

// maxAttempts bounds PutClient's conditional writes.
const maxAttempts = 16

// isWrongSequence reports a lost conditional KV update.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// GetClient returns the client's current address, or ErrNotFound.
func (b *Book) GetClient(ctx context.Context, practiceID, clientID string) (events.Client, error) {
	if !events.ValidID(practiceID) || !events.ValidID(clientID) {
		return events.Client{}, fmt.Errorf("%w: bad client %q of practice %q", ErrNotFound, clientID, practiceID)
	}
	return b.get(ctx, clientKey(practiceID, clientID))
}

// Get returns the address on record for linkID, or ErrNotFound.
func (b *Book) Get(ctx context.Context, linkID string) (events.Client, error) {
	if !events.ValidID(linkID) {
		return events.Client{}, fmt.Errorf("%w: bad link id %q", ErrNotFound, linkID)
	}
	return b.get(ctx, linkID)
}

func (b *Book) get(ctx context.Context, key string) (events.Client, error) {
	kv, err := b.bucket(ctx)
	if err != nil {
		return events.Client{}, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Client{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return events.Client{}, fmt.Errorf("recipient: read %s: %w", key, err)
	}
	var to events.Client // a clientRecord decodes into it too
	if err := json.Unmarshal(e.Value(), &to); err != nil {
		return events.Client{}, fmt.Errorf("recipient: decode %s: %w", key, err)
	}
	return to, nil
}
