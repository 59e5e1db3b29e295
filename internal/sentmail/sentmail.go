// Package sentmail owns the record of each email a mail provider accepted:
// the provider's message id (SES's MessageId) mapped to linkpipe's mail id,
// link, practice, client and a hash of the address it went to. The mailer
// writes a record right after the provider accepts an email; the feedback
// consumer (package feedback) reads it to match SES's delivery, bounce and
// complaint events to the link they concern.
//
// Records live in the JetStream key-value bucket bus.BucketMessages, which
// every replica sees and which forgets a record after bus.MessagesTTL (SES
// reports a bounce within minutes, a complaint within days). The record
// carries no address, only its hash (suppress.Hash).
package sentmail

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// ErrNotFound: no email with that provider message id is on record (never
// sent by linkpipe, or older than bus.MessagesTTL).
var ErrNotFound = errors.New("sentmail: no email with that message id")

// Record is one email the provider accepted.
type Record struct {
	MessageID  string `json:"message_id"`
	MailID     string `json:"mail_id"`
	Kind       string `json:"kind"`
	LinkID     string `json:"link_id,omitempty"`
	PracticeID string `json:"practice_id"`
	ClientID   string `json:"client_id"`
	Purpose    string `json:"purpose,omitempty"`
	// AddressHash is suppress.Hash of the address the email went to.
	AddressHash string    `json:"address_hash"`
	At          time.Time `json:"at"`
}

// Book reads and writes records. It is safe for concurrent use.
type Book struct{ b *bus.Bucket }

// NewBook returns a Book over the bucket of js (created by bus.Setup or
// bus.Ensure).
func NewBook(js jetstream.JetStream) *Book { return &Book{b: bus.NewBucket(js, bus.BucketMessages)} }

// plainKey reports whether s may be a KV key as it is:
// [-_=a-zA-Z0-9]{1,200}. SES message ids are.
func plainKey(s string) bool {
	if len(s) == 0 || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=') {
			return false
		}
	}
	return true
}

// key is the record's key: the message id itself when it is a valid key,
// else a hash of it.
func key(messageID string) string {
	if plainKey(messageID) {
		return messageID
	}
	sum := sha256.Sum256([]byte(messageID))
	return "h-" + hex.EncodeToString(sum[:])
}

// Put stores r under r.MessageID (last write wins).
func (b *Book) Put(ctx context.Context, r *Record) error {
	if r.MessageID == "" {
		return errors.New("sentmail: record without message id")
	}
	kv, err := b.b.KV(ctx)
	if err != nil {
		return fmt.Errorf("sentmail: %w", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("sentmail: encode: %w", err)
	}
	if _, err := kv.Put(ctx, key(r.MessageID), data); err != nil {
		return fmt.Errorf("sentmail: record %s: %w", r.MessageID, err)
	}
	return nil
}

// Get returns the record of messageID, or ErrNotFound.
func (b *Book) Get(ctx context.Context, messageID string) (*Record, error) {
	if messageID == "" {
		return nil, ErrNotFound
	}
	kv, err := b.b.KV(ctx)
	if err != nil {
		return nil, fmt.Errorf("sentmail: %w", err)
	}
	e, err := kv.Get(ctx, key(messageID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, messageID)
	}
	if err != nil {
		return nil, fmt.Errorf("sentmail: read %s: %w", messageID, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("sentmail: decode %s: %w", messageID, err)
	}
	return &r, nil
}
