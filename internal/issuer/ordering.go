package issuer

import (
	"context"
	"fmt"

	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// step is what an action does to a scope, decided from its current state.
type step struct {
	// next is the state to write; nil: nothing to write.
	next    *scope.State
	outcome string
	// effects: the action's side effects (email, reminders) are due,
	// because it wrote the state now or wrote the current state before
	// (a redelivery after a crash).
	effects bool
}

// mutate is scope.Store.Mutate with an issuer step: decide chooses the
// step on the current state (again on a fresh one after a conflict), and
// mutate returns the scope as it is afterwards and the step taken.
func (i *Issuer) mutate(ctx context.Context, subject string, decide func(cur *scope.Entry) (step, error)) (scope.Entry, step, error) {
	var s step
	cur, _, err := i.scopes.Mutate(ctx, subject, func(cur scope.Entry) (*scope.State, error) {
		var err error
		s, err = decide(&cur)
		return s.next, err
	})
	return cur, s, err
}

// ordering places an appointment action relative to its scope's state.
type ordering int

const (
	ordNew    ordering = iota // not applied yet: apply it
	ordLatest                 // it wrote the current state (a redelivery): finish its side effects
	ordDone                   // applied, and newer changes followed: nothing to do
	ordOlder                  // a newer appointment action was applied first
)

// order places d, whose state change is change, relative to cur.
func (i *Issuer) order(ctx context.Context, d *delivery, cur *scope.Entry, change string, h *history) (ordering, error) {
	st := &cur.State
	switch {
	case !cur.Found():
		return ordNew, nil
	case st.EventID == d.env.EventID && st.Change == change:
		return ordLatest, nil
	case st.ChangeSeq > d.seq:
		return ordOlder, nil
	case st.ChangeSeq == d.seq:
		// This very message applied it; a revocation followed.
		return ordDone, nil
	}
	applied, err := i.wroteBefore(ctx, cur.Subject, d.env.EventID, change, h)
	if err != nil {
		return 0, err
	}
	if applied {
		return ordDone, nil
	}
	return ordNew, nil
}

// alreadyApplied is the step of an action that order placed as applied:
// ordLatest (it wrote the current state: finish its side effects) or
// ordDone (nothing to do). ok is false for ordNew and ordOlder, which each
// action's own rules decide.
func alreadyApplied(ord ordering) (s step, ok bool) {
	switch ord {
	case ordLatest:
		return step{outcome: outcomeDuplicate, effects: true}, true
	case ordDone:
		return step{outcome: outcomeDuplicate}, true
	}
	return step{}, false
}

// history answers, at most once per handling, whether an earlier state of
// a scope was written by an action.
type history struct {
	checked, found bool
}

// wroteBefore reports whether any state of the scope still kept by SCOPES
// was written by eventID making change (scope.Store.Wrote, asked once per
// handling). It is asked only when an action meets a scope whose last
// state is not its own and not newer than it: the re-publish of an
// applied action (another message, a later sequence) must not apply
// again.
func (i *Issuer) wroteBefore(ctx context.Context, subject, eventID, change string, h *history) (bool, error) {
	if h.checked {
		return h.found, nil
	}
	found, err := i.scopes.Wrote(ctx, subject, eventID, change)
	if err != nil {
		return false, fmt.Errorf("issuer: %w", err)
	}
	h.checked, h.found = true, found
	return found, nil
}

// mintID returns the link id the action's event id mints for purpose in
// the scope subject.
func (i *Issuer) mintID(kid, purpose, subject, eventID string) (string, error) {
	token, err := i.keys.Mint(kid, purpose, subject, eventID)
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
func (i *Issuer) linkRef(ctx context.Context, subject string, st *scope.State, mint string) (kid, mintEventID string, err error) {
	matches := func(kid, eventID string) bool {
		if kid == "" || eventID == "" {
			return false
		}
		id, err := i.mintID(kid, st.Purpose, subject, eventID)
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
