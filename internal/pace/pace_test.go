package pace

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

var t0 = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)

func start(t *testing.T, cfg Config) *Limiter {
	t.Helper()
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// value reads a gauge or counter.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

// sendFor runs take on the fake clock for d, sleeping (advancing) as told,
// and returns how many sends it allowed.
func sendFor(l *Limiter, clk *clock.Fake, d time.Duration) int {
	end := clk.Now().Add(d)
	n := 0
	for clk.Now().Before(end) {
		if w := l.take(clk.Now()); w > 0 {
			clk.Advance(w)
			continue
		}
		n++
	}
	return n
}

func TestTakePacesAtTheRate(t *testing.T) {
	clk := clock.NewFake(t0)
	l := start(t, Config{Rate: 20, Headroom: 1, Clock: clk})
	if n := sendFor(l, clk, 10*time.Second); n < 199 || n > 202 {
		t.Fatalf("20/s for 10s allowed %d sends, want 200 (+ the one token the bucket starts with)", n)
	}
	// Headroom: the default aims at 95 %.
	clk2 := clock.NewFake(t0)
	l2 := start(t, Config{Rate: 200, Clock: clk2})
	if n := sendFor(l2, clk2, 10*time.Second); n < 1895 || n > 1912 {
		t.Fatalf("200/s at 95%% for 10s allowed %d sends, want 1900", n)
	}
}

func TestIdleReplicaSavesNoBurst(t *testing.T) {
	clk := clock.NewFake(t0)
	l := start(t, Config{Rate: 200, Headroom: 1, Clock: clk})
	sendFor(l, clk, time.Second)
	clk.Advance(time.Minute) // idle
	n := 0
	for l.take(clk.Now()) == 0 {
		n++
	}
	if want := int(200 * burstWindow.Seconds()); n != want {
		t.Fatalf("after a minute idle, %d sends at once; want the bucket's %d (50 ms of pace)", n, want)
	}
}

func TestRateIsSharedByBusyLivePeers(t *testing.T) {
	clk := clock.NewFake(t0)
	l := start(t, Config{Rate: 90, Headroom: 1, Clock: clk})
	if p := l.Pace(); !near(p, 90) {
		t.Fatalf("alone: pace %v, want 90", p)
	}
	l.observe(heartbeat{ID: "a", Busy: true}, clk.Now())
	l.observe(heartbeat{ID: "b", Busy: true}, clk.Now())
	l.observe(heartbeat{ID: l.id, Busy: true}, clk.Now()) // its own heartbeat
	if p := l.Pace(); !near(p, 30) {
		t.Fatalf("with 2 busy peers: pace %v, want 30", p)
	}
	l.observe(heartbeat{ID: "b", Busy: false}, clk.Now())
	if p := l.Pace(); !near(p, 45) {
		t.Fatalf("one peer idle: pace %v, want 45", p)
	}
	l.observe(heartbeat{ID: "a", Leaving: true}, clk.Now())
	if p := l.Pace(); !near(p, 90) {
		t.Fatalf("busy peer left: pace %v, want 90", p)
	}
	// A peer that stops heartbeating is forgotten after three beats.
	l.observe(heartbeat{ID: "c", Busy: true}, clk.Now())
	clk.Advance(liveBeats*DefaultHeartbeat - time.Millisecond)
	if p := l.Pace(); !near(p, 45) {
		t.Fatalf("silent peer still live: pace %v, want 45", p)
	}
	clk.Advance(time.Millisecond)
	if p := l.Pace(); !near(p, 90) {
		t.Fatalf("silent peer gone: pace %v, want 90", p)
	}
}

func TestBusyWhileWaitingAndShortlyAfter(t *testing.T) {
	clk := clock.NewFake(t0)
	l := start(t, Config{Rate: 10, Clock: clk})
	busy := func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.busyLocked(clk.Now()) }
	if busy() {
		t.Fatal("busy before any email")
	}
	l.want(clk.Now())
	clk.Advance(time.Hour) // one email waiting however long
	if !busy() {
		t.Fatal("idle while an email waits")
	}
	l.waited()
	clk.Advance(IdleAfter - time.Millisecond)
	if !busy() {
		t.Fatal("idle right after an email: the next one of a backlog is on its way")
	}
	clk.Advance(time.Millisecond)
	if busy() {
		t.Fatalf("still busy %v after the last email", IdleAfter)
	}
}

func TestPeersAreBounded(t *testing.T) {
	clk := clock.NewFake(t0)
	l := start(t, Config{Rate: 100, Clock: clk})
	for i := range 5000 {
		l.observe(heartbeat{ID: fmt.Sprint("p", i), Busy: true}, clk.Now())
	}
	l.mu.Lock()
	n := len(l.peers)
	l.mu.Unlock()
	if n != MaxPeers {
		t.Fatalf("%d peers kept, want at most %d", n, MaxPeers)
	}
}

func TestThrottlingCutsThePaceThenItRecovers(t *testing.T) {
	clk := clock.NewFake(t0)
	reg := prometheus.NewRegistry()
	l := start(t, Config{Rate: 100, Headroom: 1, Clock: clk, Metrics: reg})
	l.Throttled()
	if p := l.Pace(); !near(p, 100*CutFactor) {
		t.Fatalf("after a throttle: pace %v, want %v", p, 100*CutFactor)
	}
	// Answers to sends made before the cut: no second cut within CutGap.
	clk.Advance(CutGap / 2)
	l.Throttled()
	if p := l.Pace(); !near(p, 100*CutFactor+100*RecoverPerSecond*0.5) {
		t.Fatalf("second throttle within CutGap: pace %v, want one cut only", p)
	}
	clk.Advance(CutGap / 2)
	l.Throttled()
	want := (CutFactor + RecoverPerSecond) * CutFactor * 100
	if p := l.Pace(); !near(p, want) {
		t.Fatalf("throttle after CutGap: pace %v, want %v", p, want)
	}
	// Recovers slowly: 10 % of the rate per second, up to the rate.
	clk.Advance(time.Second)
	if p := l.Pace(); !near(p, want+10) {
		t.Fatalf("a second later: pace %v, want %v", p, want+10)
	}
	clk.Advance(time.Minute)
	if p := l.Pace(); !near(p, 100) {
		t.Fatalf("a minute later: pace %v, want 100", p)
	}
	// Throttled every CutGap, the pace settles where a cut undoes a
	// second's recovery: f = CutFactor(f + RecoverPerSecond), 30 %.
	for range 100 {
		clk.Advance(CutGap)
		l.Throttled()
	}
	if p, want := l.Pace(), 100*CutFactor*RecoverPerSecond/(1-CutFactor); math.Abs(p-want) > 0.01 {
		t.Fatalf("after 100 throttles: pace %v, want %v", p, want)
	}
	// Never below MinFactor.
	for range 100 {
		l.cut = time.Time{}
		l.Throttled()
	}
	if p := l.Pace(); !near(p, 100*MinFactor) {
		t.Fatalf("after 100 throttles at once: pace %v, want %v", p, 100*MinFactor)
	}
	if n := value(l.met.throttled); n != 203 {
		t.Fatalf("linkpipe_pace_throttled_total %v, want 203", n)
	}
}

type quota struct {
	rate float64
	err  error
}

func (q *quota) MaxSendRate(context.Context) (float64, error) { return q.rate, q.err }

func TestRateFromTheQuota(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := &quota{rate: 14}
	l := start(t, Config{Quota: q, Clock: clock.NewFake(t0), Metrics: reg})
	if r := l.Rate(); r != 14 {
		t.Fatalf("rate %v, want the quota's 14", r)
	}
	if g := value(l.met.maxRate); g != 14 {
		t.Fatalf("linkpipe_ses_max_send_rate %v, want 14", g)
	}
	// A refused re-read keeps the last rate.
	q.err = errors.New("AccessDenied")
	if l.readQuota(context.Background()) || l.Rate() != 14 {
		t.Fatalf("refused re-read: rate %v, want 14 kept", l.Rate())
	}
	q.err, q.rate = nil, 28
	if !l.readQuota(context.Background()) || l.Rate() != 28 {
		t.Fatalf("re-read: rate %v, want 28", l.Rate())
	}
	// LINKPIPE_SES_MAX_RATE wins over the quota.
	l2 := start(t, Config{Rate: 3, Quota: q, Clock: clock.NewFake(t0)})
	if r := l2.Rate(); r != 3 {
		t.Fatalf("rate %v, want the configured 3", r)
	}
}

func TestUnknownRateSendsUnpaced(t *testing.T) {
	q := &quota{err: errors.New("BadRequestException: Account not found")}
	l := start(t, Config{Quota: q, Clock: clock.NewFake(t0)})
	if r := l.Rate(); r != 0 {
		t.Fatalf("rate %v, want 0 (unknown)", r)
	}
	for range 1000 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	q.err, q.rate = nil, 10
	l.readQuota(context.Background())
	if p := l.Pace(); !near(p, 9.5) {
		t.Fatalf("quota known: pace %v, want 9.5", p)
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	l := start(t, Config{Rate: 0.001})
	if err := l.Wait(context.Background()); err != nil { // the bucket's one token
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want the context's deadline", err)
	}
}

func TestReplicasFindEachOtherOverNATS(t *testing.T) {
	srv := bustest.Start(t)
	nc1, _ := srv.Connect(t)
	nc2, _ := srv.Connect(t)
	a := start(t, Config{NC: nc1, Rate: 100, Headroom: 1, Heartbeat: 50 * time.Millisecond})
	b := start(t, Config{NC: nc2, Rate: 100, Headroom: 1, Heartbeat: 50 * time.Millisecond})
	// Idle replicas take no share.
	if err := a.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	keepBusy := func(l *Limiter) func() bool {
		return func() bool { l.want(l.cfg.Clock.Now()); return true }
	}
	eventually.True(t, 5*time.Second, func() bool { keepBusy(a)(); return near(a.Pace(), 100) }, "a alone busy at the whole rate")
	eventually.True(t, 5*time.Second, func() bool {
		keepBusy(a)()
		keepBusy(b)()
		return near(a.Pace(), 50) && near(b.Pace(), 50)
	}, "two busy replicas at half the rate each")
	b.Close()
	eventually.True(t, 5*time.Second, func() bool { keepBusy(a)(); return near(a.Pace(), 100) }, "a back to the whole rate once b left")
}

func TestConcurrency(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want int
	}{{0, 8}, {1, 8}, {14, 11}, {20, 14}, {200, 104}, {1e6, 512}} {
		if got := Concurrency(c.rate); got != c.want {
			t.Errorf("Concurrency(%v) = %d, want %d", c.rate, got, c.want)
		}
	}
}

// TestTurningBusyOrIdleIsAnnouncedAtOnce: with heartbeats an hour apart,
// peers still learn at once that a replica turned busy (they shrink their
// share before it sends much) and soon that it turned idle.
func TestTurningBusyOrIdleIsAnnouncedAtOnce(t *testing.T) {
	srv := bustest.Start(t)
	nc1, _ := srv.Connect(t)
	nc2, _ := srv.Connect(t)
	a := start(t, Config{NC: nc1, Rate: 100, Headroom: 1, Heartbeat: time.Hour})
	b := start(t, Config{NC: nc2, Rate: 100, Headroom: 1, Heartbeat: time.Hour})
	b.want(b.cfg.Clock.Now())
	eventually.True(t, 5*time.Second, func() bool { return near(a.Pace(), 50) }, "a to see b busy")
	b.waited()
	eventually.True(t, 5*time.Second, func() bool { return near(a.Pace(), 100) }, "a to see b idle")
}
