package link

import (
	"time"

	"github.com/linkpipe/linkpipe/events"
)

// Policy is the set of link rules in force for one practice.
type Policy struct {
	SigninTTL       time.Duration
	DocumentTTL     time.Duration
	TelehealthGrace time.Duration
	// Reminders are the default offsets before an appointment's start.
	Reminders []time.Duration
}

// DefaultPolicy returns DESIGN.md's defaults.
func DefaultPolicy() Policy {
	return Policy{
		SigninTTL:       24 * time.Hour,
		DocumentTTL:     72 * time.Hour,
		TelehealthGrace: 30 * time.Minute,
		Reminders:       []time.Duration{72 * time.Hour, 24 * time.Hour},
	}
}

// PolicyFrom overlays a practice's overrides on the defaults. Values are
// validated by events.PracticeUpdated.Validate; an invalid one here (which
// only a hand-edited bucket could hold) keeps the default.
func PolicyFrom(p *events.Policy) Policy {
	pol := DefaultPolicy()
	if p == nil {
		return pol
	}
	if d, err := events.ParseDurationBounded("", p.SigninTTL, events.MinSigninTTL, events.MaxSigninTTL); err == nil {
		pol.SigninTTL = d
	}
	if d, err := events.ParseDurationBounded("", p.DocumentTTL, events.MinDocumentTTL, events.MaxDocumentTTL); err == nil {
		pol.DocumentTTL = d
	}
	if d, err := events.ParseDurationBounded("", p.TelehealthGrace, events.MinTelehealthGrace, events.MaxTelehealthGrace); err == nil {
		pol.TelehealthGrace = d
	}
	if p.Reminders != nil {
		if r, err := events.ParseReminders("", p.Reminders); err == nil {
			pol.Reminders = r
		}
	}
	return pol
}
