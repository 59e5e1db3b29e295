package practice_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/practice"
)

func TestPutIfNewerKeepsTheNewestAction(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := practice.Open(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	upd := func(ttl string) *events.PracticeUpdated {
		return &events.PracticeUpdated{Envelope: events.Envelope{EventID: "e-" + ttl, PracticeID: "acme"},
			Practice: events.Practice{Name: "Acme"}, Policy: &events.Policy{SigninTTL: ttl}}
	}
	// A value written by Put (no sequence) is replaced.
	if err := d.Put(ctx, upd("1h")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ttl   string
		seq   uint64
		wrote bool
		want  time.Duration
	}{
		{"5h", 5, true, 5 * time.Hour},
		{"3h", 3, false, 5 * time.Hour}, // older: redelivered after a newer one
		{"6h", 5, false, 5 * time.Hour}, // the same action again
		{"7h", 7, true, 7 * time.Hour},
	} {
		wrote, err := d.PutIfNewer(ctx, upd(c.ttl), c.seq)
		if err != nil || wrote != c.wrote {
			t.Fatalf("PutIfNewer(%s, seq %d) = %v, %v; want %v", c.ttl, c.seq, wrote, err, c.wrote)
		}
		if got := d.Get("acme").Policy.SigninTTL; got != c.want {
			t.Fatalf("after seq %d: ttl %s, want %s", c.seq, got, c.want)
		}
	}
	// Another replica's directory sees the newest too.
	d2, err := practice.Open(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if got := d2.Get("acme").Policy.SigninTTL; got != 7*time.Hour {
		t.Errorf("other replica: ttl %s", got)
	}
}
