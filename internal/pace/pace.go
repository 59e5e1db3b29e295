// Package pace owns sending within the mail provider's sending rate: one
// Limiter per mailer replica, and the replicas together stay at or just
// under the account's rate (SES MaxSendRate, or LINKPIPE_SES_MAX_RATE),
// wherever they run, with nothing but the NATS connection they already
// have.
//
// # The model
//
// The account allows R emails/s. Each Limiter paces its own sends with a
// local token bucket at
//
//	pace = R × Headroom × factor / active
//
// where active is the number of replicas that are sending now (this one
// included) and factor is this replica's own slow-down (1 when SES has not
// throttled lately). Nothing is exchanged per email.
//
// Sharing: every Limiter publishes a heartbeat on core NATS (Subject,
// default linkpipe.pace.mailer; no JetStream, nothing stored) every
// Heartbeat (1 s): its id and whether it is busy (an email is waiting for
// its turn, or one did within IdleAfter). Every Limiter subscribes to the
// same subject and counts the busy peers it heard from within the last
// three heartbeats. A replica that turns busy or idle says so at once (idle
// within IdleAfter plus 50 ms), so the others shrink or grow their share
// within a round trip instead of a beat, and the last replica with a
// backlog gets the whole rate as soon as the others ran dry; a replica
// that stops (Close) says so, and one that dies silently is forgotten
// after three heartbeats. Idle replicas take no share, so one
// busy replica among three idle ones still sends at the whole rate. The
// cost is one small core-NATS message per replica per second. A forged
// heartbeat can only slow the replicas down (a peer never adds to the
// pace), and at most MaxPeers peers are kept.
//
// Adaptive slow-down (AIMD): every throttling answer (Throttled) cuts
// factor by 25 % (at most once per CutGap, since answers to sends made
// before the cut keep arriving for a moment), down to MinFactor; factor
// then recovers by 10 % of the rate per second. So a
// rate set too high, another sender on the same account, or replicas that
// have not heard of each other yet cost a few throttled calls, not a
// storm.
//
// The bucket holds 50 ms of pace, at least two emails: an idle replica
// cannot save up a burst, and a waiter woken up to 50 ms late (a loaded
// host) costs no throughput, the next sends catching up.
//
// The rate: Config.Rate when set (LINKPIPE_SES_MAX_RATE); otherwise the
// Quota (SES GetAccount's MaxSendRate), read at Start and again every
// Refresh (5 min). While the quota is unknown (GetAccount refused, e.g. an
// emulator without an account or a role without ses:GetAccount) sending is
// not paced, only warned about, and the quota is asked again every minute.
//
// Concurrency sizes how many emails a replica keeps in flight for a rate
// (rate × AssumedLatency + 4, at least 8, at most MaxConcurrency).
package pace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
)

// Defaults.
const (
	DefaultSubject   = "linkpipe.pace.mailer"
	DefaultHeartbeat = time.Second
	DefaultRefresh   = 5 * time.Minute
	// DefaultHeadroom is the fraction of the account's rate aimed at.
	DefaultHeadroom = 0.95
	// QuotaRetry is how soon an unanswered quota is asked again.
	QuotaRetry = time.Minute
	// AssumedLatency is the time Concurrency provisions for one email
	// outside the pacer: the SES call and the JetStream round trips around
	// it, with room for a loaded host.
	AssumedLatency = 500 * time.Millisecond
	// MaxPeers bounds the peers a Limiter keeps track of.
	MaxPeers = 1024
	// MaxConcurrency caps Concurrency.
	MaxConcurrency = 512
)

// AIMD parameters.
const (
	// CutFactor multiplies factor on a throttling answer.
	CutFactor = 0.75
	// CutGap is the least time between two cuts.
	CutGap = time.Second
	// RecoverPerSecond is what factor regains per second.
	RecoverPerSecond = 0.1
	// MinFactor is the floor of factor.
	MinFactor = 0.05
	// burstWindow is how much pace the bucket holds.
	burstWindow = 50 * time.Millisecond
	// maxSleep bounds one sleep of a waiter, so a pace that rises (a peer
	// left, factor recovered) is noticed.
	maxSleep = 100 * time.Millisecond
	// liveBeats: a peer unheard for this many heartbeats is gone.
	liveBeats = 3
	// idleCheck is how often a replica looks whether it turned idle.
	idleCheck = 50 * time.Millisecond
)

// IdleAfter: a replica with no email waiting is still busy this long
// after the last one (the gap to the next message of a backlog).
const IdleAfter = 250 * time.Millisecond

// Quota reads the account's sending rate (emails/s).
type Quota interface {
	MaxSendRate(ctx context.Context) (float64, error)
}

// Config configures a Limiter.
type Config struct {
	// NC carries the heartbeats; nil paces this replica alone at the whole
	// rate.
	NC *nats.Conn
	// Subject of the heartbeats (DefaultSubject).
	Subject string
	// Rate is the account's rate in emails/s; 0 reads it from Quota.
	Rate float64
	// Quota is asked when Rate is 0; nil with Rate 0 sends unpaced.
	Quota     Quota
	Refresh   time.Duration
	Heartbeat time.Duration
	// Headroom is the fraction of the rate aimed at (DefaultHeadroom).
	Headroom float64
	Clock    clock.Clock
	Log      *slog.Logger
	// Metrics registers linkpipe_ses_max_send_rate and linkpipe_pace_*.
	Metrics prometheus.Registerer
}

// Log keys.
const (
	keyRate = "max_send_rate"
	keyErr  = "err"
)

type peer struct {
	seen time.Time
	busy bool
}

// heartbeat is the message on Subject.
type heartbeat struct {
	ID      string `json:"id"`
	Busy    bool   `json:"busy"`
	Leaving bool   `json:"leaving,omitempty"`
}

type metrics struct {
	maxRate   prometheus.Gauge
	pace      prometheus.Gauge
	replicas  prometheus.Gauge
	throttled prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		maxRate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linkpipe_ses_max_send_rate",
			Help: "The account's sending rate in force (emails/s, all replicas together); 0: unknown, not paced."}),
		pace: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linkpipe_pace_rate",
			Help: "This replica's own pace (emails/s): its share of the rate, slowed down after throttling."}),
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linkpipe_pace_replicas",
			Help: "Sending replicas sharing the rate, this one included."}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "linkpipe_pace_throttled_total",
			Help: "Throttling answers that slowed this replica down."}),
	}
	if err := errors.Join(bus.Register(reg, &m.maxRate), bus.Register(reg, &m.pace),
		bus.Register(reg, &m.replicas), bus.Register(reg, &m.throttled)); err != nil {
		return metrics{}, fmt.Errorf("pace: metrics: %w", err)
	}
	return m, nil
}

// Limiter paces one replica's sends. It is safe for concurrent use.
type Limiter struct {
	cfg Config
	id  string
	met metrics
	// turn lets one waiter at a time sleep for the next token (FIFO).
	turn chan struct{}
	// beat asks for a heartbeat now (this replica became busy).
	beat chan struct{}

	mu       sync.Mutex
	rate     float64 // the account's, 0: unpaced
	bucket   *rate.Limiter
	factor   float64
	adjusted time.Time // factor last recovered
	cut      time.Time // last cut
	peers    map[string]peer
	lastWant time.Time
	waiting  int       // emails in Wait
	busy     bool      // as last announced
	lastBeat time.Time // last heartbeat published

	sub    *nats.Subscription
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start reads the rate (Config.Rate, or Quota within ctx), joins the
// heartbeats and returns the Limiter; Close stops it.
func Start(ctx context.Context, cfg Config) (*Limiter, error) {
	if cfg.Subject == "" {
		cfg.Subject = DefaultSubject
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Headroom <= 0 || cfg.Headroom > 1 {
		cfg.Headroom = DefaultHeadroom
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return nil, fmt.Errorf("pace: rate %v is not a positive number", cfg.Rate)
	}
	met, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	now := cfg.Clock.Now()
	l := &Limiter{
		cfg: cfg, id: hex.EncodeToString(raw[:]), met: met,
		turn: make(chan struct{}, 1), beat: make(chan struct{}, 1),
		bucket: rate.NewLimiter(rate.Inf, 1), factor: 1, adjusted: now, peers: map[string]peer{},
	}
	l.setRate(cfg.Rate)
	if cfg.Rate == 0 && cfg.Quota != nil {
		l.readQuota(ctx)
	}
	if cfg.NC != nil {
		l.sub, err = cfg.NC.Subscribe(cfg.Subject, l.receive)
		if err != nil {
			return nil, fmt.Errorf("pace: subscribe %s: %w", cfg.Subject, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	if cfg.NC != nil {
		l.wg.Add(1)
		go l.heartbeats(runCtx)
	}
	if cfg.Rate == 0 && cfg.Quota != nil {
		l.wg.Add(1)
		go l.refresh(runCtx)
	}
	return l, nil
}

// Close tells the peers this replica is leaving and stops heartbeats and
// quota reads. Wait keeps pacing at the last known rate.
func (l *Limiter) Close() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		if l.sub != nil {
			_ = l.sub.Unsubscribe()
			l.publish(heartbeat{ID: l.id, Leaving: true})
		}
	})
}

// Rate is the account's rate in force (emails/s); 0 when unknown (unpaced).
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// Pace is this replica's pace now (emails/s); +Inf when unpaced.
func (l *Limiter) Pace() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paceLocked(l.cfg.Clock.Now())
}

// Wait blocks until this replica may send one email, or ctx ends.
func (l *Limiter) Wait(ctx context.Context) error {
	unpaced := l.want(l.cfg.Clock.Now())
	defer l.waited()
	if unpaced {
		return nil
	}
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("pace: %w", ctx.Err())
	}
	defer func() { <-l.turn }()
	for {
		d := l.take(l.cfg.Clock.Now())
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(min(d, maxSleep))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pace: %w", ctx.Err())
		}
	}
}

// Throttled reports a throttling answer: this replica slows down.
func (l *Limiter) Throttled() {
	l.met.throttled.Inc()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Clock.Now()
	l.recoverLocked(now)
	if !l.cut.IsZero() && now.Sub(l.cut) < CutGap {
		return
	}
	l.cut = now
	l.factor = max(MinFactor, l.factor*CutFactor)
	l.met.pace.Set(l.paceLocked(now))
}

// want records that an email waits at now (until waited), asks for a
// heartbeat if this replica was idle, and reports whether sending is
// unpaced.
func (l *Limiter) want(now time.Time) (unpaced bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastWant = now
	l.waiting++
	if !l.busy { // announced idle: say otherwise at once (beatIfDue)
		select {
		case l.beat <- struct{}{}:
		default:
		}
	}
	return l.rate == 0
}

// waited ends a want.
func (l *Limiter) waited() {
	l.mu.Lock()
	l.waiting--
	l.lastWant = l.cfg.Clock.Now()
	l.mu.Unlock()
}

// busyLocked: an email waits, or one did within IdleAfter.
func (l *Limiter) busyLocked(now time.Time) bool {
	return l.waiting > 0 || (!l.lastWant.IsZero() && now.Sub(l.lastWant) < IdleAfter)
}

// take takes a token at now and returns 0, or returns how long until the
// next one.
func (l *Limiter) take(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.paceLocked(now)
	if math.IsInf(p, 1) {
		return 0
	}
	l.met.pace.Set(p)
	if lim := rate.Limit(p); l.bucket.Limit() != lim {
		l.bucket.SetLimitAt(now, lim)
		l.bucket.SetBurstAt(now, max(2, int(p*burstWindow.Seconds())))
	}
	if l.bucket.AllowN(now, 1) {
		return 0
	}
	missing := 1 - l.bucket.TokensAt(now)
	return time.Duration(missing / p * float64(time.Second))
}

// paceLocked is R × Headroom × factor / active, +Inf when unpaced.
func (l *Limiter) paceLocked(now time.Time) float64 {
	if l.rate == 0 {
		return math.Inf(1)
	}
	l.recoverLocked(now)
	return l.rate * l.cfg.Headroom * l.factor / float64(l.activeLocked(now))
}

func (l *Limiter) recoverLocked(now time.Time) {
	if dt := now.Sub(l.adjusted); dt > 0 {
		l.factor = min(1, l.factor+RecoverPerSecond*dt.Seconds())
		l.adjusted = now
	}
}

// activeLocked counts the busy live peers and this replica.
func (l *Limiter) activeLocked(now time.Time) int {
	n := 1
	live := liveBeats * l.cfg.Heartbeat
	for id, p := range l.peers {
		switch {
		case now.Sub(p.seen) >= live:
			delete(l.peers, id)
		case p.busy:
			n++
		}
	}
	return n
}

// setRate puts r (emails/s, 0: unknown) in force.
func (l *Limiter) setRate(r float64) {
	l.mu.Lock()
	l.rate = r
	l.mu.Unlock()
	l.met.maxRate.Set(r)
}

// readQuota asks the Quota once and reports whether it answered.
func (l *Limiter) readQuota(ctx context.Context) bool {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := l.cfg.Quota.MaxSendRate(qctx)
	if err == nil && (r <= 0 || math.IsNaN(r) || math.IsInf(r, 0)) {
		err = fmt.Errorf("pace: quota answered rate %v", r)
	}
	if err != nil {
		if l.Rate() == 0 {
			l.cfg.Log.Warn("cannot read the account's sending rate; sending unpaced until it is known (set LINKPIPE_SES_MAX_RATE to pace anyway)", keyErr, err)
		} else {
			l.cfg.Log.Warn("cannot re-read the account's sending rate; keeping the last one", keyRate, l.Rate(), keyErr, err)
		}
		return false
	}
	if old := l.Rate(); old != r {
		l.cfg.Log.Info("account sending rate in force", keyRate, r)
	}
	l.setRate(r)
	return true
}

func (l *Limiter) refresh(ctx context.Context) {
	defer l.wg.Done()
	for {
		next := l.cfg.Refresh
		if l.Rate() == 0 {
			next = QuotaRetry
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		l.readQuota(ctx)
	}
}

func (l *Limiter) heartbeats(ctx context.Context) {
	defer l.wg.Done()
	tick := time.NewTicker(min(idleCheck, l.cfg.Heartbeat))
	defer tick.Stop()
	l.beatIfDue(true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.beat:
		}
		l.beatIfDue(false)
	}
}

// beatIfDue announces whether this replica is busy when that changed,
// when a heartbeat is due, or when forced.
func (l *Limiter) beatIfDue(force bool) {
	now := l.cfg.Clock.Now()
	l.mu.Lock()
	busy := l.busyLocked(now)
	if !force && busy == l.busy && now.Sub(l.lastBeat) < l.cfg.Heartbeat {
		l.mu.Unlock()
		return
	}
	l.busy, l.lastBeat = busy, now
	hb := heartbeat{ID: l.id, Busy: busy}
	l.met.replicas.Set(float64(l.activeLocked(now)))
	l.mu.Unlock()
	l.publish(hb)
}

func (l *Limiter) publish(hb heartbeat) {
	data, _ := json.Marshal(hb)
	if err := l.cfg.NC.Publish(l.cfg.Subject, data); err != nil {
		l.cfg.Log.Debug("pace heartbeat not published", keyErr, err)
	}
}

func (l *Limiter) receive(msg *nats.Msg) {
	var hb heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil || hb.ID == "" {
		return
	}
	l.observe(hb, l.cfg.Clock.Now())
}

// observe records a peer's heartbeat heard at now.
func (l *Limiter) observe(hb heartbeat, now time.Time) {
	if hb.ID == l.id {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if hb.Leaving {
		delete(l.peers, hb.ID)
		return
	}
	if _, known := l.peers[hb.ID]; !known && len(l.peers) >= MaxPeers {
		return // bounded, whatever is published on the subject
	}
	l.peers[hb.ID] = peer{seen: now, busy: hb.Busy}
}

// Concurrency is how many emails a replica keeps in flight to send at
// rate emails/s: rate × AssumedLatency plus a margin, at least 8 (also
// when the rate is unknown), at most MaxConcurrency.
func Concurrency(rate float64) int {
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		return 8
	}
	return min(MaxConcurrency, max(8, int(math.Ceil(rate*AssumedLatency.Seconds()))+4))
}
