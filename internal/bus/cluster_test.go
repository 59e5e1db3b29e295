package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

// TestMailDedupeOnR3: on the replicated MAIL stream a mail subject keeps
// its first message: the same msg id again is deduplicated silently, a
// different one is refused as bus.ErrDuplicate, and of 10 concurrent
// publishes with different msg ids (one connection per node in turn)
// exactly one is stored.
func TestMailDedupeOnR3(t *testing.T) {
	c := bustest.StartCluster(t, 3)
	_, js := c.ConnectTo(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subj := bus.MailCommandPrefix + "r3-m1"
	first, err := bus.PublishOnce(ctx, js, subj, "a", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := bus.PublishOnce(ctx, js, subj, "a", []byte("x"), nil)
	if err != nil || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("same msg id: %+v %v, want a duplicate ack of sequence %d", again, err, first.Sequence)
	}
	_, err = bus.PublishOnce(ctx, js, subj, "b", []byte("y"), nil)
	if !errors.Is(err, bus.ErrDuplicate) {
		t.Fatalf("second msg id: got %v, want ErrDuplicate", err)
	}
	// The code behind it, as the raw publish sees it.
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: []byte("z"),
		Header: nats.Header{jetstream.MsgIDHeader: []string{"c"}}})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("raw second message: %v, want a JetStream API error", err)
	}
	t.Logf("R3 refuses a second message on a mail subject with error code %d: %v", apiErr.ErrorCode, apiErr)

	const racers = 10
	jss := make([]jetstream.JetStream, racers)
	for i := range jss {
		_, jss[i] = c.ConnectTo(t, i)
	}
	race := bus.MailCommandPrefix + "r3-m2"
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, js := range jss {
		wg.Go(func() {
			<-start
			_, errs[i] = bus.PublishOnce(ctx, js, race, fmt.Sprintf("m2-%d", i), fmt.Appendf(nil, "%d", i), nil)
		})
	}
	close(start)
	wg.Wait()
	stored := 0
	for i, err := range errs {
		switch {
		case err == nil:
			stored++
		case !errors.Is(err, bus.ErrDuplicate):
			t.Errorf("racer %d: %v, want ErrDuplicate", i, err)
		}
	}
	if stored != 1 {
		t.Fatalf("%d racers stored a message, want 1", stored)
	}
	subs, err := bus.NewReader(jss[2], bus.StreamMail).Subjects(ctx, bus.MailCommandPrefix+">")
	if err != nil {
		t.Fatal(err)
	}
	if subs[subj] != 1 || subs[race] != 1 {
		t.Fatalf("mail subjects %v, want one message each", subs)
	}
}

// TestLeaderReadOnR3: on a cluster LastFromLeaderJSON asks the stream's
// leader (STREAM.MSG.GET), from a connection to any node, and sees the
// newest acknowledged write; only a lone server reads directly.
func TestLeaderReadOnR3(t *testing.T) {
	c := bustest.StartCluster(t, 3)
	watch, _ := c.ConnectTo(t, 0)
	var leaderGets atomic.Int64
	if _, err := watch.Subscribe("$JS.API.STREAM.MSG.GET."+bus.StreamScopes, func(*nats.Msg) { leaderGets.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := c.ConnectTo(t, 1)
	for i := range 3 {
		if _, err := js.Publish(ctx, "scope.p.c.signin", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		_, js := c.ConnectTo(t, i)
		var v map[string]int
		if _, err := bus.NewReader(js, bus.StreamScopes).LastFromLeaderJSON(ctx, "scope.p.c.signin", &v); err != nil || v["n"] != 2 {
			t.Fatalf("node %d: %v %v, want n 2", i, v, err)
		}
	}
	eventually.True(t, 5*time.Second, func() bool { return leaderGets.Load() >= 3 }, "3 STREAM.MSG.GET requests")
}
