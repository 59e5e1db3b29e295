package mailer_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

// The time from action to email accepted (DESIGN, Operations) is observed
// on every email sent, on the mailer's clock, from the command's ActionAt;
// a command without one (queued before it existed) is not observed.
func TestActionToSentIsObserved(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.start(t, e.sink(t), reg)
	cmd, _ := e.signin(t, "evt-lat", "pat@example.com")
	cmd.ActionAt = e.clock.Now().Add(-90 * time.Second)
	e.queue(t, cmd)
	old, _ := e.signin(t, "evt-old", "sam@example.com")
	e.queue(t, old)
	for _, c := range []string{cmd.LinkID, old.LinkID} {
		eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, c, events.TypeSent); return ok }, "the sent event")
	}
	h := histogram(t, reg, "linkpipe_action_to_sent_seconds")
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 90 {
		t.Fatalf("action to sent: %d observations, sum %v s; want 1 of 90 s", h.GetSampleCount(), h.GetSampleSum())
	}
}

func histogram(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no histogram %s", name)
	return nil
}
