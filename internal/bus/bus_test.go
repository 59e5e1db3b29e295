package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

func TestSetupIsIdempotent(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- bus.Setup(ctx, js, bus.Options{}) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestMailSubjectKeepsOneMessage(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bus.PublishOnce(ctx, js, bus.MailCommandPrefix+"m1", "a", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	// Same msg id: deduplicated silently within the window.
	if _, err := bus.PublishOnce(ctx, js, bus.MailCommandPrefix+"m1", "a", []byte("x"), nil); err != nil {
		t.Fatalf("dedupe within window: %v", err)
	}
	// Different msg id (as after the window): refused by the stream.
	if _, err := bus.PublishOnce(ctx, js, bus.MailCommandPrefix+"m1", "b", []byte("x"), nil); !errors.Is(err, bus.ErrDuplicate) {
		t.Fatalf("after window: got %v, want ErrDuplicate", err)
	}
}

// Workers may start before NATS: SetupWhenReady waits for it.
func TestSetupWhenReadyWaitsForTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- bus.SetupWhenReady(ctx, js, bus.Options{}, slog.New(slog.DiscardHandler)) }()
	select {
	case err := <-done:
		t.Fatalf("returned before any server existed: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	bustest.StartIn(t, t.TempDir(), port)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, bus.StreamScopes); err != nil {
		t.Fatal(err)
	}
}

func TestLastFromLeaderJSON(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	r := bus.NewReader(js, bus.StreamScopes)
	var v map[string]int
	if _, err := r.LastFromLeaderJSON(ctx, "scope.p.c.signin", &v); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("empty subject: %v", err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "scope.p.c.signin", []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	seq, err := r.LastFromLeaderJSON(ctx, "scope.p.c.signin", &v)
	if err != nil || seq != 3 || v["n"] != 2 {
		t.Fatalf("seq %d v %v err %v", seq, v, err)
	}
	dseq, err := r.LastJSON(ctx, "scope.p.c.signin", &v)
	if err != nil || dseq != seq {
		t.Fatalf("direct get disagrees: %d %v", dseq, err)
	}
	// On one server the leader's read is a direct get, not a STREAM.MSG.GET
	// request (watched from another connection of the account).
	nc, _ := srv.Connect(t)
	var leaderGets, directGets atomic.Int64
	for subj, n := range map[string]*atomic.Int64{"$JS.API.STREAM.MSG.GET.>": &leaderGets, "$JS.API.DIRECT.GET.>": &directGets} {
		if _, err := nc.Subscribe(subj, func(*nats.Msg) { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := r.LastFromLeaderJSON(ctx, "scope.p.c.signin", &v); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, func() bool { return directGets.Load()+leaderGets.Load() >= 10 }, "10 reads seen")
	if n := leaderGets.Load(); n != 0 {
		t.Errorf("10 leader reads on one server made %d STREAM.MSG.GET requests (%d direct gets), want direct gets only", n, directGets.Load())
	}
}
