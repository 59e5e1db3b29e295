package bus

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure an in-process nats-server.
type EmbeddedOptions struct {
	// Dir holds JetStream's files.
	Dir string
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// SyncAlways fsyncs every JetStream write before its ack
	// (sync_interval: always, docs/operations.md); default: every 2 min.
	SyncAlways bool
}

// StartEmbedded starts an in-process nats-server with JetStream on and waits
// until it accepts connections. Shut it down with Shutdown and
// WaitForShutdown.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "linkpipe-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.Dir,
		NoSigs:     true,
		MaxPayload: 2 << 20,
		SyncAlways: o.SyncAlways,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: embedded nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("bus: embedded nats-server not ready after 10s")
	}
	return srv, nil
}
