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

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
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

func TestPublishIfSeqExactlyOneWinner(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	subj := "scope.p.c.signin"
	seq, err := bus.PublishIfSeq(ctx, js, subj, []byte(`{"v":0}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PublishIfSeq(ctx, js, subj, []byte(`{}`), 0); !errors.Is(err, bus.ErrConflict) {
		t.Fatalf("second create: got %v, want ErrConflict", err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := bus.PublishIfSeq(ctx, js, subj, []byte(`{"v":1}`), seq)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, bus.ErrConflict):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners, want 1", wins.Load())
	}
	r := bus.NewReader(js, bus.StreamScopes)
	if _, err := r.Last(ctx, "scope.p.c.none"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("missing subject: %v", err)
	}
	subs, err := r.Subjects(ctx, "scope.p.c.>")
	if err != nil || subs[subj] != 2 {
		t.Fatalf("subjects: %v %v", subs, err)
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
	nc, js, err := bus.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), t.Name())
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
		if _, err := bus.PublishIfSeq(ctx, js, "scope.p.c.signin", []byte(fmt.Sprintf(`{"n":%d}`, i)), uint64(i)); err != nil {
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
}
