package scope_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// Shape of the R3 races: rounds × publishers conditional publishes on one
// subject, each round's publishers released together with the same
// expected sequence.
const (
	r3Rounds     = 300
	r3Publishers = 10
)

// raceOutcome is one publisher's result in a round.
type raceOutcome struct {
	seq uint64
	err error
}

// raceRounds runs r3Rounds rounds on subj. In each round r3Publishers
// goroutines, publisher i on jss[i], call publish with the sequence the
// previous round's winner got (0 for the first round) and the same start
// signal. check sees every round's outcomes and returns the next expected
// sequence.
func raceRounds(t *testing.T, jss []jetstream.JetStream, subj string,
	publish func(ctx context.Context, js jetstream.JetStream, subj string, data []byte, expected uint64) (uint64, error),
	check func(round int, expected uint64, out []raceOutcome) uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var expected uint64
	for round := range r3Rounds {
		out := make([]raceOutcome, len(jss))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, js := range jss {
			wg.Go(func() {
				<-start
				data := fmt.Appendf(nil, `{"event_id":"r%d-p%d","action_seq":%d}`, round, i, round)
				out[i].seq, out[i].err = publish(ctx, js, subj, data, expected)
			})
		}
		close(start)
		wg.Wait()
		expected = check(round, expected, out)
		if t.Failed() {
			return
		}
	}
}

// oneWinner checks that exactly one outcome succeeded, with the sequence
// right after expected's round (expected < winner), and that every other
// failed with an error loser accepts. It returns the winner's sequence.
func oneWinner(t *testing.T, round int, expected uint64, out []raceOutcome, loser func(error) bool) uint64 {
	t.Helper()
	var winners []int
	var seq uint64
	for i, o := range out {
		switch {
		case o.err == nil:
			winners = append(winners, i)
			seq = o.seq
		case !loser(o.err):
			t.Errorf("round %d: publisher %d: %v (%T), want a conflict", round, i, o.err, errors.Unwrap(o.err))
		}
	}
	if len(winners) != 1 {
		t.Errorf("round %d: winners %v, want exactly one", round, winners)
		return 0
	}
	if seq <= expected {
		t.Errorf("round %d: winner got sequence %d, not after %d", round, seq, expected)
	}
	return seq
}

// TestUpdateOnR3: on the replicated SCOPES stream of a 3-node
// cluster, 3,000 conditional publishes in 300 rounds of 10 concurrent
// publishers (connections spread over the nodes, so most publishes are
// forwarded to the stream leader): exactly one winner per round, every
// loser gets scope.ErrConflict, and the stream holds exactly one message per
// round, so no loser's message was stored either.
//
// A second run makes the same races with the raw JetStream publish that
// Store.Update makes, to see which error codes the losers get (10071
// wrong last sequence, 10164 its "constant" form that R>1 streams answer
// while another conditional publish on the subject is in flight) and that
// scope.IsConflict recognizes every one of them.
func TestUpdateOnR3(t *testing.T) {
	c := bustest.StartCluster(t, 3)
	jss := make([]jetstream.JetStream, r3Publishers)
	for i := range jss {
		_, jss[i] = c.ConnectTo(t, i)
	}
	ctx := context.Background()
	info, err := jss[0].Stream(ctx, bus.StreamScopes)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("SCOPES has %d replicas, want 3", n)
	}

	subj := scope.Signin("r3", "c-bus")
	update := func(ctx context.Context, js jetstream.JetStream, subj string, data []byte, expected uint64) (uint64, error) {
		var st scope.State
		if err := json.Unmarshal(data, &st); err != nil {
			return 0, err
		}
		return scope.NewStore(js).Update(ctx, subj, expected, &st)
	}
	raceRounds(t, jss, subj, update, func(round int, expected uint64, out []raceOutcome) uint64 {
		return oneWinner(t, round, expected, out, func(err error) bool { return errors.Is(err, scope.ErrConflict) })
	})
	if t.Failed() {
		return
	}
	raw := scope.Signin("r3", "c-raw")
	codes := map[jetstream.ErrorCode]int{}
	raceRounds(t, jss, raw, func(ctx context.Context, js jetstream.JetStream, subj string, data []byte, expected uint64) (uint64, error) {
		ack, err := js.Publish(ctx, subj, data, jetstream.WithExpectLastSequencePerSubject(expected))
		if err != nil {
			return 0, err
		}
		return ack.Sequence, nil
	}, func(round int, expected uint64, out []raceOutcome) uint64 {
		for _, o := range out {
			var apiErr *jetstream.APIError
			if errors.As(o.err, &apiErr) {
				codes[apiErr.ErrorCode]++
			}
		}
		return oneWinner(t, round, expected, out, scope.IsConflict)
	})
	if t.Failed() {
		return
	}

	// Every publish that was not a round's winner left nothing behind:
	// the stream's last sequence counts exactly the winners.
	s, err := jss[0].Stream(ctx, bus.StreamScopes)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(2 * r3Rounds); st.State.LastSeq != want {
		t.Fatalf("SCOPES last sequence %d, want %d (one message per round)", st.State.LastSeq, want)
	}
	for _, subj := range []string{subj, raw} {
		// From the leader: a direct get may be answered by a follower that
		// has not applied the last rounds yet (seen here: 4 rounds behind).
		got, err := scope.NewStore(jss[1]).GetFromLeader(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		if got.State.ActionSeq != r3Rounds-1 {
			t.Fatalf("%s: last message from round %d, want %d", subj, got.State.ActionSeq, r3Rounds-1)
		}
	}

	keys := make([]int, 0, len(codes))
	for code := range codes {
		keys = append(keys, int(code))
	}
	sort.Ints(keys)
	var losers int
	for _, k := range keys {
		losers += codes[jetstream.ErrorCode(k)]
		t.Logf("raw races: %d losers saw error code %d", codes[jetstream.ErrorCode(k)], k)
	}
	if want := r3Rounds * (r3Publishers - 1); losers != want {
		t.Fatalf("%d losers with a JetStream API error, want %d", losers, want)
	}
}
