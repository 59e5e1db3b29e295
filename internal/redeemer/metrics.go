package redeemer

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// Outcomes of a click (linkpipe_redeemer_clicks_total{outcome}).
const (
	outcomeConfirm     = "confirm"     // GET of a valid link: confirm page
	outcomeRedeemed    = "redeemed"    // POST won: 303 to the portal
	outcomeContinued   = "continued"   // used link, same browser: 303 again
	outcomeRefused     = "refused"     // 410 with a reason
	outcomeNotFound    = "not_found"   // 404
	outcomeUnavailable = "unavailable" // 503: NATS trouble
	outcomeLimited     = "limited"     // 429: per-IP limit
)

// methodLabel maps a request method to the fixed set of method labels, so
// that no request can add a label value.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost:
		return m
	}
	return "other"
}

type metrics struct {
	clicks      *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	redemptions *prometheus.CounterVec
	conflicts   prometheus.Counter
	latency     *prometheus.HistogramVec
	renewals    *prometheus.CounterVec
	cacheHits   prometheus.Counter
	coalesced   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		clicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_clicks_total",
			Help: "Clicks on links by method and outcome (confirm, redeemed, continued, refused, not_found, unavailable, limited); method is GET, HEAD, POST or other.",
		}, []string{"method", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_refusals_total",
			Help: "Refused clicks by reason.",
		}, []string{"reason"}),
		redemptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_redemptions_total",
			Help: "Successful redemptions (tickets issued after a POST) by purpose.",
		}, []string{"purpose"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_cas_conflicts_total",
			Help: "Conditional publishes on a scope that lost to a concurrent writer.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "linkpipe_redeemer_request_duration_seconds",
			Help:    "Time to answer a click, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_renewals_total",
			Help: "Renewal requests by result (sent: a fresh sign-in link requested; resent: an appointment's current link mailed again; client_limited, ip_limited, unknown, failed).",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_issued_cache_hits_total",
			Help: "Clicks whose issued record came from memory instead of LINKS.",
		}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkpipe_redeemer_click_events_coalesced_total",
			Help: "Click events not published because the same one was just published or the link's budget is spent, by kind (touched, expired, continued).",
		}, []string{"kind"}),
	}
	// A collector already registered (a second Redeemer on the registry)
	// is shared.
	if err := errors.Join(
		bus.Register(reg, &m.clicks), bus.Register(reg, &m.refusals), bus.Register(reg, &m.redemptions),
		bus.Register(reg, &m.conflicts), bus.Register(reg, &m.latency), bus.Register(reg, &m.renewals),
		bus.Register(reg, &m.cacheHits), bus.Register(reg, &m.coalesced),
	); err != nil {
		return nil, fmt.Errorf("redeemer: metrics: %w", err)
	}
	return m, nil
}
