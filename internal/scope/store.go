package scope

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
)

// Sentinel errors.
var (
	// ErrConflict: an Update lost: the scope changed since it was read
	// (JetStream error 10071, or 10164 on a replicated stream; the
	// server's error is kept in the chain).
	ErrConflict = errors.New("scope: changed since it was read")
	// ErrTooManyConflicts: Mutate lost MaxAttempts updates in a row to
	// other writers; retry the whole operation later.
	ErrTooManyConflicts = errors.New("scope: too many concurrent changes")
)

// MaxAttempts bounds Mutate's read-decide-write loop on a scope that other
// writers keep changing.
const MaxAttempts = 32

// historyLimit bounds a walk through a scope's history; SCOPES keeps 100
// states per subject.
const historyLimit = 128

// Entry is a scope as read: its subject, its state and the sequence of the
// message that holds it (the revision an Update expects). A scope that
// never had a state reads as an Entry with Seq 0 and a zero State: in
// SCOPES "no message" means "never issued", which is why its subjects are
// never purged.
type Entry struct {
	Subject string
	State   State
	Seq     uint64
}

// Found reports whether the scope has a state.
func (e Entry) Found() bool { return e.Seq != 0 }

// StateOrNil returns the entry's state, nil if it has none (for
// State.Verdict).
func (e *Entry) StateOrNil() *State {
	if !e.Found() {
		return nil
	}
	return &e.State
}

// Store reads and writes scope states on the SCOPES stream. It is safe for
// concurrent use.
type Store struct {
	js jetstream.JetStream
	r  *bus.Reader
}

// NewStore returns a Store over the SCOPES stream of js (which must
// exist: bus.Setup creates it).
func NewStore(js jetstream.JetStream) *Store {
	return &Store{js: js, r: bus.NewReader(js, bus.StreamScopes)}
}

// Get reads a scope's state with a direct get, which any replica may
// answer: good for a page, and for an Update, which refuses a stale read.
func (s *Store) Get(ctx context.Context, subject string) (Entry, error) {
	return s.get(ctx, subject, s.r.LastJSON)
}

// GetFromLeader reads a scope's state from the stream leader: for a
// decision with no Update to catch a lagging replica (a multi-use
// redemption), or a re-read after a lost Update.
func (s *Store) GetFromLeader(ctx context.Context, subject string) (Entry, error) {
	return s.get(ctx, subject, s.r.LastFromLeaderJSON)
}

func (s *Store) get(ctx context.Context, subject string, read func(context.Context, string, any) (uint64, error)) (Entry, error) {
	e := Entry{Subject: subject}
	seq, err := read(ctx, subject, &e.State)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return Entry{Subject: subject}, nil
	case err != nil:
		return Entry{}, fmt.Errorf("scope: read %s: %w", subject, err)
	}
	e.Seq = seq
	return e, nil
}

// Update makes st the scope's state if the scope is still at seq (0: it
// must have no state yet) and returns the new sequence; ErrConflict if
// another writer got there first. It never sets a Nats-Msg-Id: on a
// replicated stream de-duplication runs before the sequence check and
// would make the loser see success.
func (s *Store) Update(ctx context.Context, subject string, seq uint64, st *State) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("scope: encode state of %s: %w", subject, err)
	}
	return s.publishIfSeq(ctx, subject, data, seq)
}

func (s *Store) publishIfSeq(ctx context.Context, subject string, data []byte, seq uint64) (uint64, error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	ack, err := bus.Publish(ctx, s.js, msg)
	if err != nil {
		if IsConflict(err) {
			return 0, fmt.Errorf("%w: %s: %w", ErrConflict, subject, err)
		}
		return 0, fmt.Errorf("scope: write %s: %w", subject, err)
	}
	return ack.Sequence, nil
}

// IsConflict reports whether err is a lost conditional publish:
// ErrConflict, or the JetStream errors 10071 and 10164 (the latter is
// what most losers see on a replicated stream).
func IsConflict(err error) bool {
	if errors.Is(err, ErrConflict) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// Decide chooses a scope's next state from its current one: nil means
// nothing to write. It may run several times (once per lost Update), each
// time on a fresher Entry.
type Decide func(cur Entry) (*State, error)

// Mutate reads the scope, asks decide for the next state and writes it
// with Update, deciding again on a fresh read after a conflict (re-read
// from the stream leader, since a replica that answered the first read may
// lag behind the winner). It returns the scope as it is afterwards and
// whether this call wrote it. After MaxAttempts lost Updates it returns
// ErrTooManyConflicts.
func (s *Store) Mutate(ctx context.Context, subject string, decide Decide) (Entry, bool, error) {
	cur, err := s.Get(ctx, subject)
	if err != nil {
		return Entry{}, false, err
	}
	return s.MutateFrom(ctx, cur, decide)
}

// MutateFrom is Mutate starting from cur, an Entry the caller has just
// read (saves a read when the caller needed the state anyway).
func (s *Store) MutateFrom(ctx context.Context, cur Entry, decide Decide) (Entry, bool, error) {
	subject := cur.Subject
	for attempt := 1; ; attempt++ {
		next, err := decide(cur)
		if err != nil || next == nil {
			return cur, false, err
		}
		seq, err := s.Update(ctx, subject, cur.Seq, next)
		if err == nil {
			return Entry{Subject: subject, State: *next, Seq: seq}, true, nil
		}
		if !errors.Is(err, ErrConflict) {
			return Entry{}, false, err
		}
		if attempt >= MaxAttempts {
			return Entry{}, false, fmt.Errorf("%w: %s: %d updates lost in a row: %w", ErrTooManyConflicts, subject, MaxAttempts, err)
		}
		if cur, err = s.GetFromLeader(ctx, subject); err != nil {
			return Entry{}, false, err
		}
	}
}

// List returns the scope subjects matching filter (ClientFilter,
// AppointmentFilter or any subject filter under Prefix), sorted.
func (s *Store) List(ctx context.Context, filter string) ([]string, error) {
	subs, err := s.r.Subjects(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("scope: list %s: %w", filter, err)
	}
	out := make([]string, 0, len(subs))
	for subj := range subs {
		out = append(out, subj)
	}
	slices.Sort(out)
	return out, nil
}

// ListClient returns the subjects of every scope of a client.
func (s *Store) ListClient(ctx context.Context, practice, client string) ([]string, error) {
	return s.List(ctx, ClientFilter(practice, client))
}

// ListAppointment returns the subjects of an appointment's scope: one,
// or none if it was never scheduled (several would mean two clients'
// scopes hold the same appointment id).
func (s *Store) ListAppointment(ctx context.Context, practice, appointment string) ([]string, error) {
	return s.List(ctx, AppointmentFilter(practice, appointment))
}

// Wrote reports whether any state of the scope still kept by SCOPES was
// written by eventID making change. It walks the subject's messages (at
// most 100) with direct gets, so callers ask only when the last state
// does not already answer: a re-published action (another message, a
// later sequence) must not apply twice.
func (s *Store) Wrote(ctx context.Context, subject, eventID, change string) (bool, error) {
	stream, err := s.r.Stream(ctx)
	if err != nil {
		return false, fmt.Errorf("scope: %w", err)
	}
	seq := uint64(1)
	for range historyLimit {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("scope: read history of %s: %w", subject, err)
		}
		var st struct {
			Change  string `json:"change"`
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.Data, &st) == nil && st.EventID == eventID && st.Change == change {
			return true, nil
		}
		seq = m.Sequence + 1
	}
	return false, nil
}
