package worker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// TestMailerReplicasSharePaceUnderLeastPrivilege: two mailer replicas on
// the mailer role of docs/nats/least-privilege.conf hear each other's
// pacing heartbeats and take half the rate each, without a permission
// violation.
func TestMailerReplicasSharePaceUnderLeastPrivilege(t *testing.T) {
	_, roles, viol := lpServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var pacers []interface {
		Wait(context.Context) error
		Pace() float64
	}
	for range 2 {
		nc, _ := connectAs(t, roles["mailer"], "mailer")
		lim, err := worker.NewPacer(ctx, worker.Deps{NC: nc}, 20, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(lim.Close)
		pacers = append(pacers, lim)
	}
	eventually.True(t, 10*time.Second, func() bool {
		ok := true
		for _, p := range pacers {
			if err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			ok = ok && math.Abs(p.Pace()-20*0.95/2) < 1e-9
		}
		return ok
	}, "each replica at half of 95% of 20/s")
	if v := viol.take(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}
