package events_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// A practice system publishes a sign-in request. Publishing it again (a
// retry after a lost acknowledgement, say) is harmless: the event id is sent
// as Nats-Msg-Id and JetStream reports the second publish as a duplicate.
func ExamplePublish() {
	url, stop := startNATS()
	defer stop()

	// What a practice system does: connect, then publish actions.
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ev := &events.SigninRequested{
		Envelope: events.Envelope{EventID: "evt-42", PracticeID: "acme"},
		Client:   events.Client{ID: "c-7", Email: "pat@example.com", Name: "Pat"},
	}
	for range 2 {
		ack, err := events.Publish(ctx, js, ev) // validates, sets Nats-Msg-Id
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("stream %s, seq %d, duplicate %v\n", ack.Stream, ack.Sequence, ack.Duplicate)
	}
	// Output:
	// stream ACTIONS, seq 1, duplicate false
	// stream ACTIONS, seq 1, duplicate true
}

// startNATS stands in for a deployment's NATS: an in-process nats-server
// with JetStream and linkpipe's streams (which linkpipe's workers create at
// start), its store in a temporary directory.
func startNATS() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "events-example-")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Dir: dir, Port: -1})
	if err != nil {
		log.Fatal(err)
	}
	stop = func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: srv.ClientURL(), Name: "events-example-setup"})
	if err != nil {
		stop()
		log.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Setup(ctx, js, bus.Options{}); err != nil {
		stop()
		log.Fatal(err)
	}
	return srv.ClientURL(), stop
}
