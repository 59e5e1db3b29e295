package suppress_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

func TestHashIsOfTheLowerCasedAddress(t *testing.T) {
	h := suppress.Hash("Pat@Example.COM")
	if h != suppress.Hash(" pat@example.com") || len(h) != 64 || strings.Contains(h, "pat") {
		t.Fatalf("hash %q", h)
	}
	if h == suppress.Hash("sam@example.com") {
		t.Fatal("two addresses, one hash")
	}
}

// Suppress, Check, Lift: a lift is recorded and ends the suppression; a
// second lift, or a lift of an address never suppressed, changes nothing;
// a later bounce suppresses again. Concurrent lifts lift once.
func TestSuppressCheckLift(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := suppress.NewList(js)
	t0 := time.Date(2026, 11, 24, 10, 2, 0, 0, time.UTC)
	if _, ok, err := l.Check(ctx, "pat@example.com"); ok || err != nil {
		t.Fatalf("suppressed before anything: %v", err)
	}
	if err := l.Suppress(ctx, suppress.Hash("pat@example.com"), &suppress.Entry{Cause: suppress.CauseBounce,
		Detail: "NoEmail: smtp; 550 5.1.1 user unknown", At: t0, LinkID: "Labc"}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := l.Check(ctx, "PAT@example.com")
	if err != nil || !ok || e.LinkID != "Labc" || !strings.HasPrefix(e.Reason(), "suppressed: the address bounced permanently (NoEmail") {
		t.Fatalf("check %+v %v %v", e, ok, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	lifts := 0
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lifted, err := l.Lift(ctx, "pat@example.com", "unsup-"+string(rune('a'+i)), "acme", t0.Add(time.Hour))
			if err != nil {
				t.Error(err)
			}
			if lifted {
				mu.Lock()
				lifts++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if lifts != 1 {
		t.Fatalf("%d lifts, want 1", lifts)
	}
	if _, ok, _ := l.Check(ctx, "pat@example.com"); ok {
		t.Fatal("still suppressed")
	}
	e, ok, _ = l.Lookup(ctx, suppress.Hash("pat@example.com"))
	if !ok || e.Active() || !e.LiftedAt.Equal(t0.Add(time.Hour)) || e.LiftedPractice != "acme" {
		t.Fatalf("lifted entry %+v", e)
	}
	if lifted, err := l.Lift(ctx, "nobody@example.com", "unsup-x", "acme", t0); lifted || err != nil {
		t.Fatalf("lift of an address never suppressed: %v %v", lifted, err)
	}
	if err := l.Suppress(ctx, suppress.Hash("pat@example.com"), &suppress.Entry{Cause: suppress.CauseComplaint, At: t0.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := l.Check(ctx, "pat@example.com"); !ok || e.Cause != suppress.CauseComplaint {
		t.Fatal("a complaint after the lift does not suppress again")
	}
}
