package practice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
)

// maxPutAttempts bounds the compare-and-set loop of PutIfNewer.
const maxPutAttempts = 16

// PutIfNewer stores an update (already validated) that came from the ACTIONS
// stream at sequence seq, unless the bucket already holds the settings of
// an update at that sequence or a later one: an update redelivered after a
// newer one was stored must not undo it. The write is a compare-and-set on
// the key's revision, so concurrent replicas cannot interleave. It reports
// whether it wrote, and applies a written update locally at once.
func (d *Directory) PutIfNewer(ctx context.Context, u *events.PracticeUpdated, seq uint64) (bool, error) {
	r := record{Practice: u.Practice, Policy: u.Policy, EventID: u.EventID, ActionSeq: seq}
	data, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("practice: encode: %w", err)
	}
	for range maxPutAttempts {
		cur, err := d.kv.Get(ctx, u.PracticeID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = d.kv.Create(ctx, u.PracticeID, data)
		case err != nil:
			return false, fmt.Errorf("practice: get %s: %w", u.PracticeID, err)
		default:
			var stored record
			// An unreadable or sequence-less value (written by Put) is
			// replaced.
			if json.Unmarshal(cur.Value(), &stored) == nil && stored.ActionSeq >= seq {
				return false, nil
			}
			_, err = d.kv.Update(ctx, u.PracticeID, data, cur.Revision())
		}
		switch {
		case err == nil:
			d.set(u.PracticeID, r)
			return true, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // another writer got there first: re-read
		default:
			return false, fmt.Errorf("practice: put %s: %w", u.PracticeID, err)
		}
	}
	return false, fmt.Errorf("practice: put %s: still conflicting after %d attempts", u.PracticeID, maxPutAttempts)
}
