package bus

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is a key-value bucket's handle, looked up on first use and kept
// (one bucket info request per process, not per call). It is safe for
// concurrent use.
type Bucket struct {
	js   jetstream.JetStream
	name string

	mu sync.Mutex
	kv jetstream.KeyValue
}

// NewBucket returns the handle of bucket name (created by Setup or Ensure).
func NewBucket(js jetstream.JetStream, name string) *Bucket { return &Bucket{js: js, name: name} }

// KV returns the bucket, looking it up the first time.
func (b *Bucket) KV(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	kv, err := b.js.KeyValue(ctx, b.name)
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", b.name, err)
	}
	b.kv = kv
	return kv, nil
}
