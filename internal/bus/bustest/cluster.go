package bustest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// ClusterName is the name of every test cluster.
const ClusterName = "linkpipe-test"

// Cluster is a running in-process JetStream cluster with linkpipe's streams
// set up at the cluster's size (R3 for three servers).
type Cluster struct {
	// Servers are the nodes, in start order.
	Servers []*server.Server
	// URL lists every node's client URL, comma-joined (a NATS_URL value).
	URL string
	// URLs are the nodes' client URLs, in the order of Servers.
	URLs []string
}

// clusterStartAttempts bounds the retries of a cluster whose route ports
// were taken between being picked and being listened on.
const clusterStartAttempts = 3

// StartCluster starts n nats-servers (n >= 1; 3 for R3) with JetStream in
// one cluster, each with its own store in t.TempDir(), listening on
// loopback only, and runs bus.Setup with Replicas n. The cluster is shut
// down with the test.
//
// How it starts: n free loopback ports are picked for the routes (listen
// on 127.0.0.1:0, keep every listener open until all n are picked so they
// differ, then close them), every server gets the full route list, and all
// n start together. A fresh JetStream cluster campaigns for a meta leader
// within about a second (nats-server's bootstrap campaign, 100-800 ms), and
// a new stream's preferred peer campaigns at once, so the whole start
// normally takes one to two seconds. StartCluster then waits until the meta
// leader sees all n peers with JetStream and every node is current, before
// bus.Setup (retried while the cluster settles). If another process grabs a
// route port in the short gap between picking and listening, the attempt is
// torn down and repeated with new ports.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("bustest: cluster of %d servers", n)
	}
	var errs []string
	for attempt := 1; attempt <= clusterStartAttempts; attempt++ {
		begin := time.Now()
		c, err := startCluster(t, n)
		if err == nil {
			t.Logf("bustest: cluster of %d ready (streams at R%d) in %v", n, n, time.Since(begin).Round(time.Millisecond))
			return c
		}
		errs = append(errs, fmt.Sprintf("attempt %d: %v", attempt, err))
	}
	t.Fatalf("bustest: cluster of %d did not start:\n%s", n, strings.Join(errs, "\n"))
	return nil
}

// startCluster is one attempt. On error every server it started is shut
// down; on success they are shut down with the test.
func startCluster(t testing.TB, n int) (_ *Cluster, err error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	c := &Cluster{}
	shutdown := func() {
		for _, s := range c.Servers {
			s.Shutdown()
		}
		for _, s := range c.Servers {
			s.WaitForShutdown()
		}
	}
	defer func() {
		if err != nil {
			shutdown()
		}
	}()
	for i := range n {
		srv, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("linkpipe-test-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			MaxPayload: 2 << 20,
			Cluster: server.ClusterOpts{
				Name: ClusterName,
				Host: "127.0.0.1",
				Port: ports[i],
			},
			// Every node knows every route (its own is ignored), so
			// each one starts with the cluster's full size in mind.
			Routes: routes,
		})
		if err != nil {
			return nil, fmt.Errorf("server %d: %w", i, err)
		}
		c.Servers = append(c.Servers, srv)
		go srv.Start()
	}
	for i, srv := range c.Servers {
		if !srv.ReadyForConnections(10 * time.Second) {
			return nil, fmt.Errorf("server %d (route port %d) not ready after 10s", i, ports[i])
		}
		c.URLs = append(c.URLs, srv.ClientURL())
	}
	c.URL = strings.Join(c.URLs, ",")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.waitJetStream(ctx); err != nil {
		return nil, err
	}
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: c.URL, Name: t.Name() + "/setup"})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// The meta leader may still be learning its peers' resources for a
	// moment; Setup is idempotent, so retry it until it passes.
	for {
		err = bus.Setup(ctx, js, bus.Options{Replicas: n})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("setup: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Cleanup(shutdown)
	return c, nil
}

// waitJetStream waits until one node is the JetStream meta leader, sees all
// the cluster's peers with JetStream on, and every node is current.
func (c *Cluster) waitJetStream(ctx context.Context) error {
	for {
		if c.jetStreamReady() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no JetStream meta leader with %d peers: %w", len(c.Servers), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *Cluster) jetStreamReady() bool {
	leaders := 0
	for _, s := range c.Servers {
		if !s.JetStreamIsCurrent() {
			return false
		}
		if s.JetStreamIsLeader() {
			leaders++
			if len(s.JetStreamClusterPeers()) != len(c.Servers) {
				return false
			}
		}
	}
	return leaders == 1
}

// freePorts picks n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Connect opens a client connection to the cluster (any node; the client
// fails over to the others), closed with the test.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, c.URL)
}

// ConnectTo opens a client connection to node i (i modulo the cluster's
// size), closed with the test. Spread connections over the nodes with it.
func (c *Cluster) ConnectTo(t testing.TB, i int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, c.URLs[i%len(c.URLs)])
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: url, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}
