// Package store owns each worker process's own durable bbolt file: opening
// it in the data directory (one file per process; bbolt's file lock forbids
// sharing) with the settings linkpipe uses. What lives in the file belongs
// to the worker: the issuer's idempotency ledger and the mailer's sink inbox
// (the redeemer keeps no file). Tests open stores with storetest.MustOpen.
package store

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Open opens (creating) <dir>/<name>.db and its buckets. It fails after 5s
// if another process holds the file, instead of waiting forever.
func Open(dir, name string, buckets ...string) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	path := filepath.Join(dir, name+".db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s (is another process using it?): %w", path, err)
	}
	// Many concurrent writers: let Batch coalesce them.
	db.MaxBatchSize = 256
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: buckets in %s: %w", path, err)
	}
	return db, nil
}
