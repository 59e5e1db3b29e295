package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Names of the backlog metrics (ConsumerMetrics). deploy/ (alerts, the
// dashboard, KEDA) refers to them.
const (
	MetricConsumerPending     = "linkpipe_consumer_pending"
	MetricConsumerAckPending  = "linkpipe_consumer_ack_pending"
	MetricConsumerRedelivered = "linkpipe_consumer_redelivered"
	MetricConsumerWaiting     = "linkpipe_consumer_waiting"
	MetricDeadLetters         = "linkpipe_deadletter_messages"
	MetricBacklogReadErrors   = "linkpipe_backlog_read_errors_total"
	MetricBacklogReadAge      = "linkpipe_backlog_read_timestamp_seconds"
)

// DefaultBacklogInterval is how often ConsumerMetrics reads consumer and
// stream info: two small JetStream API requests per consumer and one for
// the dead letters, per process.
const DefaultBacklogInterval = 10 * time.Second

// backlogReadTimeout bounds one round of info requests.
const backlogReadTimeout = 5 * time.Second

// ConsumerMetrics exports, on a process's registry, the backlog of the
// durable consumers the process uses and the depth of the dead letters,
// read from JetStream's consumer and stream info on an interval (never
// on scrape, so a scraper cannot make it ask the server more often):
//
//   - linkpipe_consumer_pending{stream,consumer}: messages not yet
//     delivered (the consumer's lag; what KEDA scales on);
//   - linkpipe_consumer_ack_pending{stream,consumer}: delivered, not yet
//     acknowledged (in flight or waiting for a retry);
//   - linkpipe_consumer_redelivered{stream,consumer}: messages delivered
//     more than once and still unacknowledged (retries);
//   - linkpipe_consumer_waiting{stream,consumer}: pull requests waiting,
//     i.e. idle workers;
//   - linkpipe_deadletter_messages{source}: messages on
//     deadletter.<source> in DEADLETTER (actions, mail, scopes);
//   - linkpipe_backlog_read_errors_total and
//     linkpipe_backlog_read_timestamp_seconds (the last complete read), so
//     a stale figure is visible.
//
// Every replica of a worker exports the same figures for its consumer (they
// are the consumer's, not the replica's): aggregate with max, not sum.
type ConsumerMetrics struct {
	js       jetstream.JetStream
	interval time.Duration
	log      *slog.Logger

	pending, ackPending, redelivered, waiting *prometheus.GaugeVec
	deadLetters                               *prometheus.GaugeVec
	readErrors                                prometheus.Counter
	readAt                                    prometheus.Gauge

	mu      sync.Mutex
	watched []consumerRef
	poke    chan struct{}
}

type consumerRef struct{ stream, consumer string }

// NewConsumerMetrics registers the backlog metrics with reg (bus.Register:
// shared with another ConsumerMetrics on the same registry) and returns
// the collector; Watch names the consumers, Run reads them. interval <= 0
// means DefaultBacklogInterval; a nil log discards.
func NewConsumerMetrics(js jetstream.JetStream, reg prometheus.Registerer, interval time.Duration, log *slog.Logger) (*ConsumerMetrics, error) {
	if interval <= 0 {
		interval = DefaultBacklogInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	labels := []string{"stream", "consumer"}
	m := &ConsumerMetrics{
		js: js, interval: interval, log: log, poke: make(chan struct{}, 1),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricConsumerPending,
			Help: "Messages of the durable consumer's stream not yet delivered (its lag), from consumer info."}, labels),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricConsumerAckPending,
			Help: "Messages delivered to the durable consumer and not yet acknowledged, from consumer info."}, labels),
		redelivered: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricConsumerRedelivered,
			Help: "Unacknowledged messages of the durable consumer delivered more than once, from consumer info."}, labels),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricConsumerWaiting,
			Help: "Pull requests waiting on the durable consumer (idle workers), from consumer info."}, labels),
		deadLetters: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricDeadLetters,
			Help: "Messages kept on deadletter.<source> in the DEADLETTER stream."}, []string{"source"}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricBacklogReadErrors,
			Help: "Consumer or stream info requests for the backlog metrics that failed."}),
		readAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricBacklogReadAge,
			Help: "Unix time of the last complete read of the backlog metrics."}),
	}
	if err := errors.Join(
		Register(reg, &m.pending), Register(reg, &m.ackPending), Register(reg, &m.redelivered),
		Register(reg, &m.waiting), Register(reg, &m.deadLetters), Register(reg, &m.readErrors),
		Register(reg, &m.readAt),
	); err != nil {
		return nil, err
	}
	return m, nil
}

// Watch adds a durable consumer to those read; a running Run reads it at
// once. Watching one twice is harmless.
func (m *ConsumerMetrics) Watch(stream, consumer string) {
	m.mu.Lock()
	ref := consumerRef{stream, consumer}
	for _, w := range m.watched {
		if w == ref {
			m.mu.Unlock()
			return
		}
	}
	m.watched = append(m.watched, ref)
	m.mu.Unlock()
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Run reads the backlog at once and then every interval (and whenever a
// consumer is added) until ctx ends.
func (m *ConsumerMetrics) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, backlogReadTimeout)
		if err := m.Read(rctx); err != nil && ctx.Err() == nil {
			m.log.Debug("bus: backlog metrics", keyErr, err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.poke:
		}
	}
}

// Read reads every watched consumer's info and the dead letters once and
// updates the metrics. Each failed request counts in
// linkpipe_backlog_read_errors_total; their errors are joined.
func (m *ConsumerMetrics) Read(ctx context.Context) error {
	m.mu.Lock()
	watched := append([]consumerRef(nil), m.watched...)
	m.mu.Unlock()
	var errs []error
	for _, w := range watched {
		c, err := m.js.Consumer(ctx, w.stream, w.consumer)
		if err != nil {
			errs = append(errs, fmt.Errorf("bus: consumer %s on %s: %w", w.consumer, w.stream, err))
			continue
		}
		// Consumer looks the info up; CachedInfo is that answer.
		info := c.CachedInfo()
		m.pending.WithLabelValues(w.stream, w.consumer).Set(float64(info.NumPending))
		m.ackPending.WithLabelValues(w.stream, w.consumer).Set(float64(info.NumAckPending))
		m.redelivered.WithLabelValues(w.stream, w.consumer).Set(float64(info.NumRedelivered))
		m.waiting.WithLabelValues(w.stream, w.consumer).Set(float64(info.NumWaiting))
	}
	if err := m.readDeadLetters(ctx); err != nil {
		errs = append(errs, err)
	}
	m.readErrors.Add(float64(len(errs)))
	if len(errs) == 0 {
		m.readAt.SetToCurrentTime()
	}
	return errors.Join(errs...)
}

// DeadLetterSources are the sources whose dead letters are counted even
// when they have none (so an alert sees a 0, not an absent series).
var DeadLetterSources = []string{"actions", "mail", "scopes"}

func (m *ConsumerMetrics) readDeadLetters(ctx context.Context) error {
	s, err := m.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", StreamDeadLetter, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(DeadLetterPrefix+">"))
	if err != nil {
		return fmt.Errorf("bus: stream %s info: %w", StreamDeadLetter, err)
	}
	counts := map[string]uint64{}
	for _, src := range DeadLetterSources {
		counts[src] = 0
	}
	for subj, n := range info.State.Subjects {
		counts[strings.TrimPrefix(subj, DeadLetterPrefix)] += n
	}
	for src, n := range counts {
		m.deadLetters.WithLabelValues(src).Set(float64(n))
	}
	return nil
}
