package sentmail_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/sentmail"
)

// A record is found by SES's message id, also one that is not a valid KV
// key (hashed), and an unknown id is ErrNotFound.
func TestPutGet(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := sentmail.NewBook(js)
	for _, id := range []string{"0100018c-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", "<odd id@ses>.with dots"} {
		r := &sentmail.Record{MessageID: id, MailID: "Labc-signin", LinkID: "Labc", PracticeID: "acme", ClientID: "c-7", AddressHash: "h"}
		if err := b.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, id)
		if err != nil || *got != *r {
			t.Fatalf("%q: %+v %v", id, got, err)
		}
	}
	if _, err := b.Get(ctx, "unknown"); !errors.Is(err, sentmail.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}
