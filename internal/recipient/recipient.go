// Package recipient owns the address on record of each link: who a link's
// emails go to. The issuer records it when it mints a link (and when an
// appointment's client details change); the mailer sends a link only to
// the address recorded for that link, whatever a mail command says, and a
// renewal is resolved to it, never to an address typed by the clicker.
//
// Records live in the JetStream key-value bucket bus.BucketRecipients,
// keyed by link id, so every replica sees them. Addresses are kept there
// and in queued mail commands only: lifecycle events carry client ids,
// never addresses or names, and a record can be deleted (erasure) without
// touching the streams that can never be purged.
package recipient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// ErrNotFound: no address is on record for the link.
var ErrNotFound = errors.New("recipient: no address on record")

// Book reads and writes the records. It is safe for concurrent use.
type Book struct {
	js jetstream.JetStream

	mu sync.Mutex
	kv jetstream.KeyValue
}

// NewBook returns a Book over the bucket of js (created by bus.Setup).
func NewBook(js jetstream.JetStream) *Book { return &Book{js: js} }

func (b *Book) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	kv, err := b.js.KeyValue(ctx, bus.BucketRecipients)
	if err != nil {
		return nil, fmt.Errorf("recipient: bucket %s: %w", bus.BucketRecipients, err)
	}
	b.kv = kv
	return kv, nil
}

// Put records to as the address of linkID (last write wins).
func (b *Book) Put(ctx context.Context, linkID string, to events.Client) error {
	if !events.ValidID(linkID) {
		return fmt.Errorf("recipient: bad link id %q", linkID)
	}
	kv, err := b.bucket(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(&to)
	if err != nil {
		return fmt.Errorf("recipient: encode: %w", err)
	}
	if _, err := kv.Put(ctx, linkID, data); err != nil {
		return fmt.Errorf("recipient: record %s: %w", linkID, err)
	}
	return nil
}

// Get returns the address on record for linkID, or ErrNotFound.
func (b *Book) Get(ctx context.Context, linkID string) (events.Client, error) {
	if !events.ValidID(linkID) {
		return events.Client{}, fmt.Errorf("%w: bad link id %q", ErrNotFound, linkID)
	}
	kv, err := b.bucket(ctx)
	if err != nil {
		return events.Client{}, err
	}
	e, err := kv.Get(ctx, linkID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Client{}, fmt.Errorf("%w: link %s", ErrNotFound, linkID)
	}
	if err != nil {
		return events.Client{}, fmt.Errorf("recipient: read %s: %w", linkID, err)
	}
	var to events.Client
	if err := json.Unmarshal(e.Value(), &to); err != nil {
		return events.Client{}, fmt.Errorf("recipient: decode %s: %w", linkID, err)
	}
	return to, nil
}
