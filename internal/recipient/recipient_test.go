package recipient_test

import (
	"context"
	"errors"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/recipient"
)

func TestLinkRecordsAndClientCurrentAddress(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	b := recipient.NewBook(js)
	if _, err := b.Get(ctx, "Lnone"); !errors.Is(err, recipient.ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
	pat := events.Client{ID: "c1", Email: "pat@example.com", Name: "Pat"}
	if err := b.Put(ctx, "L1", pat); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "L1"); err != nil || got != pat {
		t.Fatalf("Get: %+v %v", got, err)
	}
	if err := b.Put(ctx, "bad.id", pat); err == nil {
		t.Fatal("a key that is no id was accepted")
	}

	// The client's current address follows ACTIONS order, whatever the
	// order the writes arrive in.
	newer := events.Client{ID: "c1", Email: "pat.new@example.com"}
	if err := b.PutClient(ctx, "acme", newer, 20); err != nil {
		t.Fatal(err)
	}
	if err := b.PutClient(ctx, "acme", pat, 10); err != nil { // older action, handled late
		t.Fatal(err)
	}
	if got, err := b.GetClient(ctx, "acme", "c1"); err != nil || got.Email != newer.Email {
		t.Fatalf("current address %+v %v, want the newer action's", got, err)
	}
	if err := b.PutClient(ctx, "acme", pat, 30); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.GetClient(ctx, "acme", "c1"); got.Email != pat.Email {
		t.Fatalf("current address %+v after a newer action", got)
	}
	if _, err := b.GetClient(ctx, "acme", "nobody"); !errors.Is(err, recipient.ErrNotFound) {
		t.Fatalf("unknown client: %v", err)
	}
}
