package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/projector"
	"github.com/linkpipe/linkpipe/internal/scope"
)

var t0 = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

func TestDerive(t *testing.T) {
	at := t0.Add(time.Minute)
	for _, tc := range []struct {
		st         scope.State
		typ, reasn string
	}{
		{scope.State{Change: scope.ChangeIssued, LinkID: "Lx"}, "", ""},
		{scope.State{Change: scope.ChangeRescheduled, LinkID: "Lx"}, "", ""},
		{scope.State{Change: scope.ChangeUsed, LinkID: "Lx", UsedAt: &at}, events.TypeUsed, ""},
		{scope.State{Change: scope.ChangeRevoked, LinkID: "Lx", RevokedAt: &at, RevokedReason: "lost phone"}, events.TypeRevoked, "lost phone"},
		{scope.State{Change: scope.ChangeCanceled, LinkID: "Lx", CanceledAt: &at}, events.TypeRevoked, events.ReasonCanceled},
	} {
		ev := projector.Derive("scope.acme.c-1.appt.a-1", &tc.st, 42)
		if tc.typ == "" {
			if ev != nil {
				t.Errorf("%s: %+v", tc.st.Change, ev)
			}
			continue
		}
		if ev == nil || ev.Type != tc.typ || ev.Reason != tc.reasn || ev.EventID != "scope-42" || ev.PracticeID != "acme" ||
			ev.ClientID != "c-1" || !ev.At.Equal(at) || ev.Subject() != "links.Lx."+tc.typ {
			t.Errorf("%s: %+v", tc.st.Change, ev)
		}
	}
}

// TestRunProjectsOnceAndDeadLettersJunk runs the projector on a real
// server: a used state becomes one links.<id>.used (a second projector
// replica and a redelivery add nothing), an unreadable state goes to
// deadletter.scopes and does not block the states after it.
func TestRunProjectsOnceAndDeadLettersJunk(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	for range 2 { // two replicas share the consumer and the metric
		p, err := projector.New(projector.Config{JS: js, Metrics: reg})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(runCtx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	subject := scope.Signin("acme", "c-1")
	publish := func(data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	used := t0.Add(time.Minute)
	issued, _ := json.Marshal(scope.State{Change: scope.ChangeIssued, LinkID: "L1", Purpose: events.PurposeSignin, At: t0})
	usedState, _ := json.Marshal(scope.State{Change: scope.ChangeUsed, LinkID: "L1", Purpose: events.PurposeSignin, At: t0, UsedAt: &used})
	publish(issued)
	publish([]byte("{not json"))
	publish(usedState)

	links := bus.NewReader(js, bus.StreamLinks)
	var ev events.LinkEvent
	eventually.True(t, 30*time.Second, func() bool {
		_, err := links.LastJSON(ctx, events.LinkSubject("L1", events.TypeUsed), &ev)
		return err == nil
	}, "the used event")
	if ev.EventID != "scope-3" || !ev.At.Equal(used) || ev.PracticeID != "acme" || ev.ClientID != "c-1" {
		t.Errorf("used event %+v", ev)
	}
	dl := bus.NewReader(js, bus.StreamDeadLetter)
	eventually.True(t, 30*time.Second, func() bool {
		subs, err := dl.Subjects(ctx, bus.DeadLetterPrefix+"scopes")
		return err == nil && subs[bus.DeadLetterPrefix+"scopes"] == 1
	}, "the dead letter")
	eventually.True(t, 30*time.Second, func() bool {
		c, err := js.Consumer(ctx, bus.StreamScopes, bus.ConsumerProjector)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the projector to catch up")
	subs, err := links.Subjects(ctx, "links.L1.>")
	if err != nil && !errors.Is(err, bus.ErrNotFound) {
		t.Fatal(err)
	}
	if len(subs) != 1 || subs[events.LinkSubject("L1", events.TypeUsed)] != 1 {
		t.Errorf("LINKS subjects %v, want one used event", subs)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] += m.GetCounter().GetValue()
		}
	}
	if want := map[string]float64{"linkpipe_redeemer_projected_total/none": 1, "linkpipe_redeemer_projected_total/used": 1}; len(got) != 2 ||
		got["linkpipe_redeemer_projected_total/none"] != 1 || got["linkpipe_redeemer_projected_total/used"] != 1 {
		t.Errorf("metrics %v, want %v", got, want)
	}
}

// TestProjectsEachScopeInOrder: scopes are projected side by side (lanes),
// yet the events of one scope follow its states: a link used then revoked
// has its used event before its revoked event on LINKS.
func TestProjectsEachScopeInOrder(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 40
	used := t0.Add(time.Minute)
	revoked := t0.Add(2 * time.Minute)
	for i := range n {
		subject := scope.Signin("acme", fmt.Sprintf("c-%d", i))
		id := fmt.Sprintf("L%d", i)
		u, _ := json.Marshal(scope.State{Change: scope.ChangeUsed, LinkID: id, Purpose: events.PurposeSignin, At: t0, UsedAt: &used})
		r, _ := json.Marshal(scope.State{Change: scope.ChangeRevoked, LinkID: id, Purpose: events.PurposeSignin, At: t0, UsedAt: &used,
			RevokedAt: &revoked, RevokedReason: "client_request"})
		for _, data := range [][]byte{u, r} {
			if _, err := js.PublishAsync(subject, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-js.PublishAsyncComplete()
	p, err := projector.New(projector.Config{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()
	links, err := js.Stream(ctx, bus.StreamLinks)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("L%d", i)
		var seqs [2]uint64
		eventually.True(t, 30*time.Second, func() bool {
			for k, typ := range []string{events.TypeUsed, events.TypeRevoked} {
				m, err := links.GetLastMsgForSubject(ctx, events.LinkSubject(id, typ))
				if err != nil {
					return false
				}
				seqs[k] = m.Sequence
			}
			return true
		}, "both events of "+id)
		if seqs[0] >= seqs[1] {
			t.Errorf("%s: used at LINKS seq %d, revoked at %d: out of order", id, seqs[0], seqs[1])
		}
	}
}
