// Package storetest opens linkpipe's bbolt stores for tests, the way the
// workers open them (store.Open), in a directory removed with the test.
package storetest

import (
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/internal/store"
)

// MustOpen opens (creating) the store name with its buckets in t.TempDir()
// and closes it when the test ends; it fails the test if the store cannot be
// opened.
func MustOpen(t testing.TB, name string, buckets ...string) *bolt.DB {
	t.Helper()
	db, err := store.Open(t.TempDir(), name, buckets...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
