package scope_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/scope"
)

func TestUpdateExactlyOneWinner(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	subj := scope.Signin("p", "c")
	store := scope.NewStore(js)
	seq, err := store.Update(ctx, subj, 0, &scope.State{EventID: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Update(ctx, subj, 0, &scope.State{}); !errors.Is(err, scope.ErrConflict) {
		t.Fatalf("second create: got %v, want ErrConflict", err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := store.Update(ctx, subj, seq, &scope.State{EventID: "v1"})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, scope.ErrConflict):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners, want 1", wins.Load())
	}
	r := bus.NewReader(js, bus.StreamScopes)
	if _, err := r.Last(ctx, "scope.p.c.none"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("missing subject: %v", err)
	}
	subs, err := r.Subjects(ctx, "scope.p.c.>")
	if err != nil || subs[subj] != 2 {
		t.Fatalf("subjects: %v %v", subs, err)
	}
}

func TestGetEmptyScopeIsNotAnError(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	store := scope.NewStore(js)
	for _, get := range []func(context.Context, string) (scope.Entry, error){store.Get, store.GetFromLeader} {
		e, err := get(context.Background(), scope.Signin("p", "nobody"))
		if err != nil || e.Found() || e.StateOrNil() != nil || e.Subject != scope.Signin("p", "nobody") {
			t.Fatalf("empty scope: %+v %v", e, err)
		}
	}
}

// TestMutateDecidesAgainAfterAConflict: a writer that sneaks in between
// Mutate's read and its write makes Mutate decide again on the fresh
// state, and the final state builds on both.
func TestMutateDecidesAgainAfterAConflict(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store := scope.NewStore(js)
	subj := scope.Document("p", "c", "s")
	calls := 0
	after, wrote, err := store.Mutate(ctx, subj, func(cur scope.Entry) (*scope.State, error) {
		calls++
		if calls == 1 {
			if _, err := store.Update(ctx, subj, cur.Seq, &scope.State{EventID: "other"}); err != nil {
				t.Fatal(err)
			}
		}
		next := cur.State
		next.EventID = next.EventID + "+mine"
		return &next, nil
	})
	if err != nil || !wrote || calls != 2 {
		t.Fatalf("mutate: wrote %v calls %d err %v", wrote, calls, err)
	}
	got, err := store.Get(ctx, subj)
	if err != nil || got.State.EventID != "other+mine" || got.Seq != after.Seq || after.Seq != 2 {
		t.Fatalf("after: %+v, read %+v %v", after, got, err)
	}
	// A decision to write nothing writes nothing.
	_, wrote, err = store.Mutate(ctx, subj, func(scope.Entry) (*scope.State, error) { return nil, nil })
	if err != nil || wrote {
		t.Fatalf("no-op mutate: %v %v", wrote, err)
	}
	// A decision's error is returned as it is.
	boom := errors.New("boom")
	if _, _, err := store.Mutate(ctx, subj, func(scope.Entry) (*scope.State, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("decide error: %v", err)
	}
}

func TestMutateGivesUpAfterMaxAttempts(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store := scope.NewStore(js)
	subj := scope.Signin("p", "busy")
	calls := 0
	_, _, err := store.Mutate(ctx, subj, func(cur scope.Entry) (*scope.State, error) {
		calls++
		// Another writer wins every time.
		if _, err := store.Update(ctx, subj, cur.Seq, &scope.State{}); err != nil {
			t.Fatal(err)
		}
		return &scope.State{}, nil
	})
	if !errors.Is(err, scope.ErrTooManyConflicts) || !errors.Is(err, scope.ErrConflict) || calls != scope.MaxAttempts {
		t.Fatalf("err %v after %d calls, want ErrTooManyConflicts after %d", err, calls, scope.MaxAttempts)
	}
}

func TestListAndWrote(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store := scope.NewStore(js)
	subjects := []string{scope.Signin("p", "c"), scope.Document("p", "c", "s1"), scope.Appointment("p", "c", "a1"), scope.Signin("p", "d")}
	for _, s := range subjects {
		if _, err := store.Update(ctx, s, 0, &scope.State{Change: scope.ChangeIssued, EventID: "e1"}); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := store.Get(ctx, subjects[0])
	if _, err := store.Update(ctx, subjects[0], e.Seq, &scope.State{Change: scope.ChangeRevoked, EventID: "e2"}); err != nil {
		t.Fatal(err)
	}
	got, err := store.ListClient(ctx, "p", "c")
	want := []string{scope.Appointment("p", "c", "a1"), scope.Document("p", "c", "s1"), scope.Signin("p", "c")}
	if err != nil || len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("ListClient: %v %v, want %v", got, err, want)
	}
	if got, err := store.ListAppointment(ctx, "p", "a1"); err != nil || len(got) != 1 || got[0] != want[0] {
		t.Fatalf("ListAppointment: %v %v", got, err)
	}
	for _, c := range []struct {
		event, change string
		want          bool
	}{{"e1", scope.ChangeIssued, true}, {"e2", scope.ChangeRevoked, true}, {"e2", scope.ChangeIssued, false}, {"e3", scope.ChangeIssued, false}} {
		if got, err := store.Wrote(ctx, subjects[0], c.event, c.change); err != nil || got != c.want {
			t.Errorf("Wrote(%s, %s) = %v %v, want %v", c.event, c.change, got, err, c.want)
		}
	}
}
