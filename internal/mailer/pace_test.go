package mailer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/pace"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// pacedRun is one backlog sent by paced mailer replicas through a
// rate-limited SES stand-in.
type pacedRun struct {
	rate             float64
	replicas, emails int
	counts           sestest.Counts
	elapsed          time.Duration // from the replicas' start to the last email accepted
	failedEvents     uint64
}

// runPaced queues emails sign-in commands, then starts replicas mailers,
// each on its own NATS connection with its own pace.Limiter reading the
// rate from the stand-in's GetAccount, and waits until every email is
// accepted.
func runPaced(t testing.TB, rate float64, replicas, emails int, latency time.Duration) pacedRun {
	return runBacklog(t, rate, replicas, emails, latency, true)
}

// runBacklog is runPaced, or with paced false the mailer as it was
// before package pace: no pacer, 8 emails in flight per replica.
func runBacklog(t testing.TB, rate float64, replicas, emails int, latency time.Duration, paced bool) pacedRun {
	t.Helper()
	e := newEnv(t)
	stand := sestest.NewLimited(t, sestest.LimitedConfig{Rate: rate, Latency: latency})
	sender, err := ses.New(ctx(t), stand.Options(), ses.IdleConns(pace.Concurrency(rate)))
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for i := range emails {
		cmd, _ := e.signin(t, fmt.Sprintf("evt-pace-%d", i), fmt.Sprintf("c%d@example.com", i))
		e.queue(t, cmd)
		links = append(links, cmd.LinkID)
	}
	start := time.Now()
	for range replicas {
		nc, js := e.srv.Connect(t)
		lim, err := pace.Start(ctx(t), pace.Config{NC: nc, Quota: sender})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(lim.Close)
		e.start(t, sender, nil, func(c *mailer.Config) {
			c.JS, c.Pacer, c.Concurrency = js, lim, pace.Concurrency(lim.Rate())
			if !paced {
				c.Pacer, c.Concurrency = nil, 8
			}
			c.RetryMin, c.RetryMax = 200*time.Millisecond, 2*time.Second
		})
	}
	eventually.True(t, 5*time.Minute, func() bool { return stand.Counts().Accepted >= emails }, "every email accepted")
	eventually.True(t, 30*time.Second, func() bool { return e.drained(t) }, "the consumer to drain")
	r := pacedRun{rate: rate, replicas: replicas, emails: emails, counts: stand.Counts()}
	r.elapsed = r.counts.Last.Sub(start)
	r.failedEvents = e.count(t, bus.StreamLinks, "links.*."+events.TypeFailed)
	return r
}

func (r pacedRun) throttledFraction() float64 {
	return float64(r.counts.Throttled) / float64(r.counts.Calls)
}

// TestTwoPacedReplicasAreRarelyThrottled: the finding "No pacing" (300
// mails on one replica took 1,114 SES calls, 814 throttled). Two replicas
// against a stand-in allowing 20 sends/s share the rate: few throttled
// answers, every email sent once, no .failed event.
func TestTwoPacedReplicasAreRarelyThrottled(t *testing.T) {
	r := runPaced(t, 20, 2, 60, 5*time.Millisecond)
	t.Logf("%d emails: %d calls, %d throttled", r.emails, r.counts.Calls, r.counts.Throttled)
	if r.counts.Accepted != r.emails {
		t.Errorf("%d accepted, want %d", r.counts.Accepted, r.emails)
	}
	// Unpaced, 2 x 8 in flight against 20/s throttle most calls. Paced, at
	// most the odd one at a start-up (a generous bound: the machine may be
	// loaded).
	if r.counts.Throttled*10 > r.counts.Calls {
		t.Errorf("%d of %d calls throttled, want under 10%%", r.counts.Throttled, r.counts.Calls)
	}
	if r.failedEvents != 0 {
		t.Errorf("%d .failed events; throttling publishes none", r.failedEvents)
	}
}

// recordingPacer counts what the mailer tells it.
type recordingPacer struct{ waits, throttled atomic.Int64 }

func (p *recordingPacer) Wait(context.Context) error { p.waits.Add(1); return nil }
func (p *recordingPacer) Throttled()                 { p.throttled.Add(1) }

// TestThrottlingSlowsThePacerAndPublishesNoFailedEvent: throttled answers
// reach the pacer and no links.<id>.failed is published for them.
func TestThrottlingSlowsThePacerAndPublishesNoFailedEvent(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t, sestest.Throttled, sestest.Throttled)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingPacer{}
	e.start(t, sender, prometheus.NewRegistry(), func(c *mailer.Config) { c.Pacer = p })
	cmd, _ := e.signin(t, "evt-throttled", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the sent event")
	if w, th := p.waits.Load(), p.throttled.Load(); w != 3 || th != 2 {
		t.Errorf("pacer: %d waits, %d throttled; want 3 and 2", w, th)
	}
	if _, ok := e.lastEvent(t, cmd.LinkID, events.TypeFailed); ok {
		t.Error("a .failed event for throttling")
	}
}

// blockingPacer never gives a turn: Wait returns when its ctx ends.
type blockingPacer struct{ waiting atomic.Int64 }

func (p *blockingPacer) Wait(ctx context.Context) error {
	p.waiting.Add(1)
	<-ctx.Done()
	return ctx.Err()
}
func (p *blockingPacer) Throttled() {}

// TestStoppingHandsBackEmailsWaitingForTheirTurn: an email still waiting
// for the pacer when the mailer stops is not sent but goes back to the
// queue, where another replica sends it.
func TestStoppingHandsBackEmailsWaitingForTheirTurn(t *testing.T) {
	e := newEnv(t)
	fake := sestest.NewFake(t)
	sender, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	p := &blockingPacer{}
	m, err := mailer.New(mailer.Config{JS: e.js, Keys: e.keys, Practices: e.dir, Sender: sender, From: "links@acme.example",
		PublicURL: publicURL, Clock: e.clock, Pacer: p, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	cmd, _ := e.signin(t, "evt-stop", "pat@example.com")
	e.queue(t, cmd)
	eventually.True(t, 30*time.Second, func() bool { return p.waiting.Load() == 1 }, "the email waiting for its turn")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return: the waiting email held it")
	}
	if n := fake.Attempts(); n != 0 {
		t.Fatalf("%d SES calls by the stopped mailer, want 0", n)
	}
	e.start(t, sender, nil) // another replica, unpaced
	eventually.True(t, 30*time.Second, func() bool { _, ok := e.lastEvent(t, cmd.LinkID, events.TypeSent); return ok }, "the email sent by the other replica")
	if n := len(fake.Accepted()); n != 1 {
		t.Fatalf("%d emails accepted, want 1", n)
	}
}
