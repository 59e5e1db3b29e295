package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// A consumer that cannot be read counts as a read error and leaves the
// last complete read's timestamp alone; the figures of the others are
// still updated. Two collectors on one registry share the metrics.
func TestConsumerMetricsCountFailedReads(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	reg := prometheus.NewRegistry()
	m, err := bus.NewConsumerMetrics(js, reg, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewConsumerMetrics(js, reg, time.Hour, nil); err != nil {
		t.Fatalf("a second collector on the registry: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.Watch(bus.StreamMail, bus.ConsumerMailer)
	m.Watch(bus.StreamMail, bus.ConsumerMailer) // once is enough
	if err := m.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if n := series(t, reg, bus.MetricConsumerPending); n != 1 {
		t.Errorf("%d pending series, want 1", n)
	}
	if n := series(t, reg, bus.MetricDeadLetters); n != len(bus.DeadLetterSources) {
		t.Errorf("%d dead-letter series, want one per source", n)
	}
	m.Watch(bus.StreamMail, "no-such-consumer")
	if err := m.Read(ctx); err == nil {
		t.Fatal("a missing consumer read without error")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == bus.MetricBacklogReadErrors {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 1 {
				t.Errorf("read errors %v, want 1", v)
			}
			return
		}
	}
	t.Error("no read error counter")
}

// series counts the series of metric name on reg.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}
