// Package bustest starts a real in-process nats-server with JetStream for
// tests, with linkpipe's streams set up, and cleans it up with the test.
package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// Server is a running test server.
type Server struct {
	*server.Server
	URL string
	// Dir is JetStream's store; a restarted server on it keeps its data.
	Dir string
}

// Start starts a nats-server with JetStream on a free loopback port, its
// store in t.TempDir(), and runs bus.Setup on it.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir(), -1)
}

// StartIn starts a server on dir and port (-1: any free port).
func StartIn(t testing.TB, dir string, port int) *Server {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s := &Server{Server: srv, URL: srv.ClientURL(), Dir: dir}
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Setup(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// Connect opens a client connection closed with the test.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: s.URL, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}
