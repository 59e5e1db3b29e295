package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/events"
)

// bucketLedger maps an action (subject, practice, event id) to the link it
// minted, written once everything the action asked for is in JetStream.
const bucketLedger = "issuer_ledger"

// Ledger retention: an action can be redelivered while ACTIONS keeps it
// (7 days); entries older than that are useless.
const (
	ledgerKeep       = 8 * 24 * time.Hour
	ledgerPruneEvery = time.Hour
	ledgerPruneChunk = 10000
)

// ledgerRecord is one ledger entry. It holds no token.
type ledgerRecord struct {
	LinkID string    `json:"link_id"`
	At     time.Time `json:"at"`
}

// ledger is the issuer's idempotency ledger in its own bbolt file. It is an
// optimization only: JetStream decides whether work is done.
type ledger struct {
	db *bolt.DB
}

func openLedger(db *bolt.DB) (*ledger, error) {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucketLedger))
		return err
	}); err != nil {
		return nil, fmt.Errorf("issuer: ledger bucket: %w", err)
	}
	return &ledger{db: db}, nil
}

// ledgerKey names an action: the same event id may be used by two
// practices, or by one practice for two kinds of action, and those mint
// different links.
func ledgerKey(subject string, env events.Envelope) []byte {
	return []byte(subject + "/" + env.PracticeID + "/" + env.EventID)
}

func (l *ledger) get(key []byte) (ledgerRecord, bool, error) {
	var rec ledgerRecord
	var ok bool
	err := l.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketLedger)).Get(key)
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return ledgerRecord{}, false, fmt.Errorf("issuer: ledger read: %w", err)
	}
	return rec, ok, nil
}

// put records an entry; concurrent puts are coalesced by db.Batch.
func (l *ledger) put(key []byte, rec ledgerRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("issuer: ledger encode: %w", err)
	}
	if err := l.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketLedger)).Put(key, v)
	}); err != nil {
		return fmt.Errorf("issuer: ledger write: %w", err)
	}
	return nil
}

// ledgerEntry is one entry to write.
type ledgerEntry struct {
	key []byte
	rec ledgerRecord
}

// putAll records entries in one transaction.
func (l *ledger) putAll(entries []ledgerEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketLedger))
		for _, e := range entries {
			v, err := json.Marshal(e.rec)
			if err != nil {
				return err
			}
			if err := b.Put(e.key, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("issuer: ledger write: %w", err)
	}
	return nil
}

// prune deletes entries recorded before cutoff, a chunk per transaction so
// writers are never held up long. It returns how many it deleted.
func (l *ledger) prune(ctx context.Context, cutoff time.Time, chunk int) (int, error) {
	total := 0
	var after []byte // last key examined by the previous chunk
	for ctx.Err() == nil {
		var old [][]byte
		scanned := 0
		err := l.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte(bucketLedger)).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && scanned < chunk; k, v = c.Next() {
				scanned++
				after = append(after[:0:0], k...)
				var rec ledgerRecord
				if json.Unmarshal(v, &rec) != nil || rec.At.Before(cutoff) {
					old = append(old, after)
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("issuer: ledger prune: %w", err)
		}
		if len(old) > 0 {
			if err := l.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte(bucketLedger))
				for _, k := range old {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return total, fmt.Errorf("issuer: ledger prune: %w", err)
			}
			total += len(old)
		}
		if scanned < chunk {
			return total, nil
		}
	}
	return total, ctx.Err()
}

// pruneLoop prunes the ledger now and then every hour until ctx ends.
func (i *Issuer) pruneLoop(ctx context.Context) {
	t := time.NewTicker(ledgerPruneEvery)
	defer t.Stop()
	for {
		n, err := i.ledger.prune(ctx, i.clock.Now().Add(-ledgerKeep), ledgerPruneChunk)
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			i.log.Warn("issuer ledger prune failed", keyErr, err)
		case n > 0:
			i.log.Info("issuer ledger pruned", keyDeleted, n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
