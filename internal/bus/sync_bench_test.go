package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// BenchmarkPublishSyncPolicy measures what JetStream's sync policy costs a
// publish acknowledged by a single server: the default (fsync every 2
// minutes) against sync_interval: always (fsync before every ack), the
// policy docs/operations.md chooses for one server. goroutines=1 is one
// publisher waiting for each ack; goroutines=32 is many at once (as the
// issuer's handlers publish), where the server batches writes between
// syncs. Figures in docs/operations.md.
func BenchmarkPublishSyncPolicy(b *testing.B) {
	for _, always := range []bool{false, true} {
		for _, g := range []int{1, 32} {
			b.Run(fmt.Sprintf("sync_always=%v/goroutines=%d", always, g), func(b *testing.B) {
				srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
					StoreDir: b.TempDir(), NoSigs: true, SyncAlways: always})
				if err != nil {
					b.Fatal(err)
				}
				go srv.Start()
				if !srv.ReadyForConnections(10 * time.Second) {
					b.Fatal("server not ready")
				}
				defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
				nc, js, err := bus.Connect(bus.ConnectOptions{URL: srv.ClientURL(), Name: b.Name()})
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
					b.Fatal(err)
				}
				payload := make([]byte, 400) // about an action or a scope state
				b.ResetTimer()
				var wg sync.WaitGroup
				per := (b.N + g - 1) / g
				for w := range g {
					wg.Go(func() {
						for i := range per {
							if _, err := js.Publish(ctx, fmt.Sprintf("s.%d.%d", w, i%64), payload); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(per*g)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkPublishR3 is the same publish on an in-process three-server
// cluster with an R3 stream and the default sync policy: the ack waits
// for a majority of the servers instead of a disk sync.
func BenchmarkPublishR3(b *testing.B) {
	for _, g := range []int{1, 32} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			c := bustest.StartCluster(b, 3)
			_, js := c.Connect(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 400)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + g - 1) / g
			for w := range g {
				wg.Go(func() {
					for i := range per {
						if _, err := js.Publish(ctx, fmt.Sprintf("s.%d.%d", w, i%64), payload); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*g)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
