// Package practice owns practice settings: name, reply-to address, portal
// URL and link policy. They arrive as actions.practice.updated, are stored in
// the JetStream key-value bucket linkpipe_practices (newest wins) and every
// worker replica keeps a live copy through a bucket watch, so an update is
// seen everywhere within milliseconds. A practice with no settings gets the
// defaults.
package practice

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
)

// Log keys.
const (
	keyPracticeID = "practice_id"
	keyErr        = "err"
)

// Settings are one practice's settings with defaults applied.
type Settings struct {
	ID   string
	Name string
	// ReplyTo is where a client's reply goes; empty means the From address.
	ReplyTo string
	// PortalURL is the portal's base; empty means the redeemer's default.
	PortalURL string
	Policy    link.Policy
	// Timezone (IANA) is where expiry times in emails are written; empty
	// means UTC (see Location).
	Timezone string
	// Locale (BCP 47) is the default language of emails and pages.
	Locale string
	// LogoURL (https) and AccentColor (#rrggbb, see ButtonColor) brand the
	// practice's emails and pages.
	LogoURL     string
	AccentColor string
	// Known is false for a practice that never sent settings.
	Known bool
}

// record is what the bucket holds: the action's own fields, and the ACTIONS
// stream sequence of the update that wrote it (PutIfNewer; 0 from Put).
type record struct {
	Practice  events.Practice `json:"practice"`
	Policy    *events.Policy  `json:"policy,omitempty"`
	EventID   string          `json:"event_id"`
	ActionSeq uint64          `json:"action_seq,omitempty"`
}

// Directory is a live, read-mostly copy of every practice's settings.
type Directory struct {
	kv jetstream.KeyValue
	w  jetstream.KeyWatcher

	mu       sync.RWMutex
	settings map[string]Settings
}

// Open loads every practice's settings and keeps them current until ctx
// ends or Close is called.
func Open(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Directory, error) {
	kv, err := js.KeyValue(ctx, bus.BucketPractices)
	if err != nil {
		return nil, fmt.Errorf("practice: bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("practice: watch: %w", err)
	}
	d := &Directory{kv: kv, w: w, settings: map[string]Settings{}}
	ready := make(chan struct{})
	go func() {
		initial := true
		for e := range w.Updates() {
			if e == nil { // end of the initial values
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			d.apply(e, log)
		}
		if initial {
			close(ready)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		w.Stop()
		return nil, ctx.Err()
	}
	return d, nil
}

func (d *Directory) apply(e jetstream.KeyValueEntry, log *slog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(d.settings, e.Key())
		return
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		log.Error("practice settings unreadable", keyPracticeID, e.Key(), keyErr, err)
		return
	}
	d.settings[e.Key()] = fromRecord(e.Key(), r)
}

func fromRecord(id string, r record) Settings {
	return Settings{
		ID: id, Name: r.Practice.Name, ReplyTo: r.Practice.ReplyTo,
		PortalURL: r.Practice.PortalURL, Policy: link.PolicyFrom(r.Policy), Known: true,
		Timezone: r.Practice.Timezone, Locale: r.Practice.Locale,
		LogoURL: r.Practice.LogoURL, AccentColor: r.Practice.AccentColor,
	}
}

// Close stops following updates.
func (d *Directory) Close() error { return d.w.Stop() }

// Get returns a practice's settings, defaults if it has none.
func (d *Directory) Get(id string) Settings {
	d.mu.RLock()
	s, ok := d.settings[id]
	d.mu.RUnlock()
	if !ok {
		return Settings{ID: id, Name: id, Policy: link.DefaultPolicy()}
	}
	if s.Name == "" {
		s.Name = id
	}
	return s
}

// Put stores an update (already validated) and applies it locally at once.
func (d *Directory) Put(ctx context.Context, u *events.PracticeUpdated) error {
	r := record{Practice: u.Practice, Policy: u.Policy, EventID: u.EventID}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("practice: encode: %w", err)
	}
	if _, err := d.kv.Put(ctx, u.PracticeID, data); err != nil {
		return fmt.Errorf("practice: put %s: %w", u.PracticeID, err)
	}
	d.set(u.PracticeID, r)
	return nil
}

// set applies a stored record locally, before the watch delivers it.
func (d *Directory) set(id string, r record) {
	d.mu.Lock()
	d.settings[id] = fromRecord(id, r)
	d.mu.Unlock()
}
