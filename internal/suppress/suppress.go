// Package suppress owns the suppression list: the addresses linkpipe sends
// nothing more to, because SES reported a permanent bounce or a complaint
// for them. The feedback consumer (package feedback) suppresses; the mailer
// checks the list before every email (a suppressed address gets a
// permanent links.<id>.failed whose reason starts with "suppressed"); the
// issuer lifts a suppression on actions.address.unsuppressed; `linkpipe
// explain` shows it.
//
// The list is the JetStream key-value bucket bus.BucketSuppressed, so every
// replica honours it at once. It is keyed by Hash, the SHA-256 of the
// lower-cased address: the bucket holds no address. A lifted suppression
// stays in the bucket, marked lifted (when, by which action), so support
// can still see it; a later bounce suppresses the address again.
// Suppression is deployment-wide: a mailbox that does not exist does not
// exist for any practice.
package suppress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// Causes of a suppression.
const (
	CauseBounce    = "bounce"    // a permanent bounce
	CauseComplaint = "complaint" // the recipient marked an email as spam
)

// Entry is one address's suppression.
type Entry struct {
	Cause string `json:"cause"`
	// Detail is the bounce subtype and diagnostic, or the complaint's
	// feedback type; scrubbed of addresses.
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
	// The email whose feedback suppressed the address.
	MessageID  string `json:"message_id,omitempty"`
	MailID     string `json:"mail_id,omitempty"`
	LinkID     string `json:"link_id,omitempty"`
	PracticeID string `json:"practice_id,omitempty"`

	// LiftedAt is set once actions.address.unsuppressed lifted it; the
	// address is then no longer suppressed.
	LiftedAt *time.Time `json:"lifted_at,omitempty"`
	// LiftedBy is that action's event id, LiftedPractice its practice.
	LiftedBy       string `json:"lifted_by,omitempty"`
	LiftedPractice string `json:"lifted_practice,omitempty"`
}

// Active reports whether the entry still suppresses its address.
func (e *Entry) Active() bool { return e.LiftedAt == nil }

// Reason is the failed event's reason for an email not sent because of e:
// "suppressed: ..." (events.ReasonSuppressedPrefix).
func (e *Entry) Reason() string {
	what := "the address bounced permanently"
	if e.Cause == CauseComplaint {
		what = "the recipient marked an email as spam"
	}
	s := "suppressed: " + what
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s + " at " + e.At.UTC().Format(time.RFC3339)
}

// Hash is the key of an address: the hex SHA-256 of its lower-cased,
// trimmed form.
func Hash(address string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(address))))
	return hex.EncodeToString(sum[:])
}

// List reads and writes the suppression list. It is safe for concurrent
// use.
type List struct{ b *bus.Bucket }

// NewList returns the List over the bucket of js (created by bus.Setup or
// bus.Ensure).
func NewList(js jetstream.JetStream) *List { return &List{b: bus.NewBucket(js, bus.BucketSuppressed)} }

func (l *List) kv(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := l.b.KV(ctx)
	if err != nil {
		return nil, fmt.Errorf("suppress: %w", err)
	}
	return kv, nil
}

// Suppress records e for the address whose Hash is hash (last write wins:
// a new bounce after a lift suppresses again).
func (l *List) Suppress(ctx context.Context, hash string, e *Entry) error {
	kv, err := l.kv(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("suppress: encode: %w", err)
	}
	if _, err := kv.Put(ctx, hash, data); err != nil {
		return fmt.Errorf("suppress: write: %w", err)
	}
	return nil
}

// Lookup returns the entry of the address whose Hash is hash, active or
// lifted, and whether there is one.
func (l *List) Lookup(ctx context.Context, hash string) (*Entry, bool, error) {
	e, _, err := l.lookup(ctx, hash)
	if err != nil || e == nil {
		return nil, false, err
	}
	return e, true, nil
}

func (l *List) lookup(ctx context.Context, hash string) (*Entry, uint64, error) {
	kv, err := l.kv(ctx)
	if err != nil {
		return nil, 0, err
	}
	kve, err := kv.Get(ctx, hash)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("suppress: read: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		return nil, 0, fmt.Errorf("suppress: decode: %w", err)
	}
	return &e, kve.Revision(), nil
}

// Check returns the active suppression of address, if any.
func (l *List) Check(ctx context.Context, address string) (*Entry, bool, error) {
	e, ok, err := l.Lookup(ctx, Hash(address))
	if err != nil || !ok || !e.Active() {
		return nil, false, err
	}
	return e, true, nil
}

// Lift ends the suppression of address, recording the action (event id
// and practice) and the time. It reports whether a suppression was active;
// lifting an address that is not suppressed changes nothing. The write is
// conditional on the entry's revision, so a bounce recorded meanwhile is
// not lost.
func (l *List) Lift(ctx context.Context, address, eventID, practiceID string, at time.Time) (bool, error) {
	kv, err := l.kv(ctx)
	if err != nil {
		return false, err
	}
	hash := Hash(address)
	for range 8 {
		e, rev, err := l.lookup(ctx, hash)
		if err != nil {
			return false, err
		}
		if e == nil || !e.Active() {
			return false, nil
		}
		at := at.UTC()
		e.LiftedAt, e.LiftedBy, e.LiftedPractice = &at, eventID, practiceID
		data, err := json.Marshal(e)
		if err != nil {
			return false, fmt.Errorf("suppress: encode: %w", err)
		}
		if _, err := kv.Update(ctx, hash, data, rev); err == nil {
			return true, nil
		} else if !isWrongSequence(err) {
			return false, fmt.Errorf("suppress: lift: %w", err)
		}
	}
	return false, errors.New("suppress: lift: too many concurrent writers")
}

// isWrongSequence reports a lost conditional KV update.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
