package practice_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// Every replica of every worker holds its own Directory; an update stored
// through one is seen by the others through the bucket watch.
func TestUpdateReachesEveryReplica(t *testing.T) {
	srv := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var dirs []*practice.Directory
	for range 3 {
		_, js := srv.Connect(t)
		d, err := practice.Open(ctx, js, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		dirs = append(dirs, d)
	}
	if s := dirs[1].Get("acme"); s.Known || s.Policy.SigninTTL != 24*time.Hour || s.Name != "acme" {
		t.Fatalf("unknown practice must get the defaults: %+v", s)
	}
	u := &events.PracticeUpdated{Envelope: events.Envelope{EventID: "e1", PracticeID: "acme"},
		Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "front@acme.example", PortalURL: "https://portal.acme.example"},
		Policy:   &events.Policy{SigninTTL: "2h", TelehealthGrace: "1h"}}
	start := time.Now()
	if err := dirs[0].Put(ctx, u); err != nil {
		t.Fatal(err)
	}
	for i, d := range dirs {
		for d.Get("acme").Policy.SigninTTL != 2*time.Hour {
			if ctx.Err() != nil {
				t.Fatalf("replica %d never saw the update", i)
			}
			time.Sleep(time.Millisecond)
		}
		s := d.Get("acme")
		if !s.Known || s.Name != "Acme Therapy" || s.ReplyTo != "front@acme.example" || s.PortalURL != "https://portal.acme.example" ||
			s.Policy.TelehealthGrace != time.Hour || s.Policy.DocumentTTL != 72*time.Hour {
			t.Fatalf("replica %d: %+v", i, s)
		}
	}
	t.Logf("update visible on all 3 replicas after %s", time.Since(start))

	// A replica that starts later loads the newest settings at once.
	_, js := srv.Connect(t)
	late, err := practice.Open(ctx, js, log)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if late.Get("acme").Policy.SigninTTL != 2*time.Hour {
		t.Fatal("a new replica does not see stored settings")
	}
}
