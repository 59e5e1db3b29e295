package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
)

// historyLimit bounds a walk through a scope's history; SCOPES keeps 100
// states per subject.
const historyLimit = 128

// scope is a scope subject and the state read from it.
type scope struct {
	subject string
	st      link.State
	seq     uint64 // 0 when !found
	found   bool
}

func (i *Issuer) readScopeAt(ctx context.Context, subject string) (scope, error) {
	st, seq, found, err := i.readScope(ctx, subject)
	if err != nil {
		return scope{}, err
	}
	return scope{subject: subject, st: st, seq: seq, found: found}, nil
}

// step is what an action does to a scope, decided from its current state.
type step struct {
	// next is the state to write; nil: nothing to write.
	next    *link.State
	outcome string
	// effects: the action's side effects (email, reminders) are due,
	// because it wrote the state now or wrote the current state before
	// (a redelivery after a crash).
	effects bool
}

// mutate reads the scope, lets decide choose a step and writes the step's
// state conditionally (expected last sequence: the one read), deciding
// again on the fresh state after a conflict. It returns the scope as it is
// afterwards and the step taken.
func (i *Issuer) mutate(ctx context.Context, subject string, decide func(cur *scope) (step, error)) (scope, step, error) {
	for attempt := 1; ; attempt++ {
		cur, err := i.readScopeAt(ctx, subject)
		if err != nil {
			return scope{}, step{}, err
		}
		s, err := decide(&cur)
		if err != nil || s.next == nil {
			return cur, s, err
		}
		seq, err := i.writeState(ctx, subject, cur.seq, s.next)
		if err == nil {
			return scope{subject: subject, st: *s.next, seq: seq, found: true}, s, nil
		}
		if !errors.Is(err, bus.ErrConflict) || attempt >= maxCASAttempts {
			return scope{}, step{}, err
		}
	}
}

// history answers, at most once per handling, whether an earlier state of
// a scope was written by an action.
type history struct {
	checked, found bool
}

// wroteBefore reports whether any state of the scope still kept by SCOPES
// was written by eventID making change. It walks the subject's messages
// (at most 100) with direct gets; it runs only when an action meets a
// scope whose last state is not its own and not newer than it: the
// re-publish of an applied action (another message, a later sequence)
// must not apply again.
func (i *Issuer) wroteBefore(ctx context.Context, subject, eventID, change string, h *history) (bool, error) {
	if h.checked {
		return h.found, nil
	}
	s, err := i.streams.get(ctx, bus.StreamScopes)
	if err != nil {
		return false, err
	}
	seq := uint64(1)
	for range historyLimit {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("issuer: read history of %s: %w", subject, err)
		}
		var st struct {
			Change  string `json:"change"`
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.Data, &st) == nil && st.EventID == eventID && st.Change == change {
			h.found = true
			break
		}
		seq = m.Sequence + 1
	}
	h.checked = true
	return h.found, nil
}

// streamCache keeps stream handles (one stream info request each, once).
type streamCache struct {
	js jetstream.JetStream
	mu sync.Mutex
	m  map[string]jetstream.Stream
}

func (c *streamCache) get(ctx context.Context, name string) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.m[name]; ok {
		return s, nil
	}
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("issuer: stream %s: %w", name, err)
	}
	c.m[name] = s
	return s, nil
}

// mintID returns the link id the action's event id mints for purpose.
func (i *Issuer) mintID(kid, purpose, practiceID, eventID string) (string, error) {
	token, err := i.keys.Mint(kid, purpose, practiceID, eventID)
	if err != nil {
		return "", fmt.Errorf("issuer: mint: %w", err)
	}
	id, err := link.ID(token)
	if err != nil {
		return "", fmt.Errorf("issuer: link id: %w", err)
	}
	return id, nil
}

// linkRef returns the key id and mint event id with which the mailer
// re-derives the token of st's current link. mint, when not empty, is the
// event id the caller believes minted it (saves reading the issued event).
func (i *Issuer) linkRef(ctx context.Context, practiceID string, st *link.State, mint string) (kid, mintEventID string, err error) {
	matches := func(kid, eventID string) bool {
		if kid == "" || eventID == "" {
			return false
		}
		id, err := i.mintID(kid, st.Purpose, practiceID, eventID)
		return err == nil && id == st.LinkID
	}
	if matches(st.Kid, mint) {
		return st.Kid, mint, nil
	}
	ev, err := i.readIssued(ctx, st.LinkID)
	if err != nil {
		return "", "", err
	}
	if ev == nil {
		// The action that made the link current publishes it next; its
		// redelivery will if it crashed.
		return "", "", fmt.Errorf("issuer: link %s has no issued event yet", st.LinkID)
	}
	for _, kid := range []string{st.Kid, i.keys.CurrentKid()} {
		if matches(kid, ev.CauseEventID) {
			return kid, ev.CauseEventID, nil
		}
	}
	return "", "", fmt.Errorf("issuer: no key of this issuer re-derives link %s (state kid %q, mint event %s): is LINKPIPE_LINK_KEY the one that minted it?",
		st.LinkID, st.Kid, ev.CauseEventID)
}
