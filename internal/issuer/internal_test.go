package issuer

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

func TestBackoff(t *testing.T) {
	for n, want := range map[uint64]time.Duration{
		0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 9: 25600 * time.Millisecond, 10: 30 * time.Second, 1000: 30 * time.Second,
	} {
		if got := retryBackoff().Nominal(n); got != want {
			t.Errorf("retryBackoff().Nominal(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestLedgerPrune(t *testing.T) {
	db := storetest.MustOpen(t, "issuer", Buckets()...)
	l, err := openLedger(db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	const n, chunk = 1001, 7 // many chunks, the last one partial
	if err := db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			at := now
			if i%2 == 0 {
				at = now.Add(-9 * 24 * time.Hour)
			}
			v, _ := json.Marshal(ledgerRecord{LinkID: "L", At: at})
			if err := tx.Bucket([]byte(bucketLedger)).Put(key(i), v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deleted, err := l.prune(context.Background(), now.Add(-ledgerKeep), chunk)
	if err != nil {
		t.Fatal(err)
	}
	if deleted != (n+1)/2 {
		t.Errorf("deleted %d, want %d", deleted, (n+1)/2)
	}
	kept := 0
	for i := range n {
		_, ok, err := l.get(key(i))
		if err != nil {
			t.Fatal(err)
		}
		if ok != (i%2 == 1) {
			t.Fatalf("entry %d: present %v", i, ok)
		}
		if ok {
			kept++
		}
	}
	if kept != n/2 {
		t.Errorf("kept %d", kept)
	}
}

func key(i int) []byte {
	return ledgerKey(events.SubjectSigninRequested, events.Envelope{EventID: "e" + strconv.Itoa(i), PracticeID: "p"})
}
