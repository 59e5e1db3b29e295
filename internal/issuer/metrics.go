package issuer

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// metrics are the issuer's Prometheus metrics.
type metrics struct {
	actions     *prometheus.CounterVec
	seconds     *prometheus.HistogramVec
	deadLetters *prometheus.CounterVec
	revoked     prometheus.Counter
	schedules   *prometheus.CounterVec
	known       map[string]bool
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_issuer_actions_total",
			Help: "Actions handled by the issuer, by subject and outcome (issued, born_superseded, born_revoked, duplicate, stored, stale, dead_letter, retry, updated, rescheduled, canceled, ignored_canceled, reminded, skipped, revoked, unsuppressed, not_suppressed).",
		}, []string{"subject", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "linkpipe_issuer_handle_seconds",
			Help:    "Time to handle one action, settlement included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"subject"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_issuer_dead_letters_total",
			Help: "Poison actions copied to deadletter.actions, by subject.",
		}, []string{"subject"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_issuer_links_revoked_total",
			Help: "Scopes whose live link a links_revoked action revoked.",
		}),
		schedules: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_issuer_reminder_schedules_total",
			Help: "Reminder schedule operations on ACTIONS: planned (a schedule published or replaced) and purged (schedule subjects removed).",
		}, []string{"op"}),
		known: map[string]bool{},
	}
	for _, s := range bus.ActionSubjects {
		m.known[s] = true
	}
	// A collector already registered (a second Issuer on the registry)
	// is shared.
	if err := errors.Join(
		bus.Register(reg, &m.actions), bus.Register(reg, &m.seconds), bus.Register(reg, &m.deadLetters),
		bus.Register(reg, &m.revoked), bus.Register(reg, &m.schedules),
	); err != nil {
		return nil, fmt.Errorf("issuer: metrics: %w", err)
	}
	return m, nil
}

// label keeps the subject label's cardinality bounded.
func (m *metrics) label(subject string) string {
	if m.known[subject] {
		return subject
	}
	return "other"
}

func (m *metrics) observe(subject, outcome string, d time.Duration) {
	s := m.label(subject)
	m.actions.WithLabelValues(s, outcome).Inc()
	m.seconds.WithLabelValues(s).Observe(d.Seconds())
}

func (m *metrics) deadLetter(subject string) {
	m.deadLetters.WithLabelValues(m.label(subject)).Inc()
}
