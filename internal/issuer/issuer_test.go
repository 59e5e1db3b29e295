package issuer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSigninIssuesLinkMailsItAndSupersedes(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.publish(signin("evt-b1", "bob"))
	seqA1 := e.publish(signin("evt-a1", "alice"))
	e.waitFor("two mail commands", func() bool { return e.mailCount() == 2 })

	// The scope state.
	scopeA := scope.Signin("acme", "alice")
	linkA1 := e.linkIDOf(events.PurposeSignin, "acme", "evt-a1")
	st, _ := e.scopeState(scopeA)
	want := scope.State{
		Change: scope.ChangeIssued, LinkID: linkA1, Purpose: events.PurposeSignin, OneTime: true,
		ValidFrom: t0, ExpiresAt: t0.Add(24 * time.Hour), EventID: "evt-a1", ActionSeq: seqA1, At: t0, Kid: "k1",
	}
	if !statesEqual(st, want) {
		t.Errorf("scope state:\n got %+v\nwant %+v", st, want)
	}

	// The issued event.
	ev := e.issued(linkA1)
	if ev.EventID != "issued-"+linkA1 || ev.Type != events.TypeIssued || ev.LinkID != linkA1 ||
		ev.PracticeID != "acme" || ev.ClientID != "alice" || ev.Purpose != events.PurposeSignin ||
		!ev.At.Equal(t0) || ev.CauseEventID != "evt-a1" || ev.ReturnTo != "/messages" ||
		ev.ValidFrom == nil || !ev.ValidFrom.Equal(t0) || ev.ExpiresAt == nil || !ev.ExpiresAt.Equal(t0.Add(24*time.Hour)) ||
		ev.Supersedes != "" {
		t.Errorf("issued event: %+v", ev)
	}
	// The address on record is in the recipient book, never on LINKS.
	if to, err := recipient.NewBook(e.js).Get(e.ctx, linkA1); err != nil || to != signin("x", "alice").Client {
		t.Errorf("address on record: %+v %v", to, err)
	}
	if raw, err := e.links.Last(e.ctx, events.LinkSubject(linkA1, events.TypeIssued)); err != nil || bytes.Contains(raw.Data, []byte("@")) {
		t.Errorf("the issued event carries an address: %s %v", raw.Data, err)
	}
	if got := scope.OfLink(&ev); got != scopeA {
		t.Errorf("ScopeOf(issued) = %s, want %s", got, scopeA)
	}

	// The mail command, and the token the mailer re-derives from it.
	cmd, raw := e.mailCmd(linkA1 + "-" + mail.KindSignin)
	if cmd.MailID != linkA1+"-signin" || cmd.Kind != mail.KindSignin || cmd.PracticeID != "acme" ||
		cmd.To != signin("x", "alice").Client || cmd.LinkID != linkA1 || cmd.Kid != "k1" ||
		cmd.Purpose != events.PurposeSignin || cmd.MintEventID != "evt-a1" || cmd.CauseEventID != "evt-a1" ||
		!cmd.ValidFrom.Equal(t0) || !cmd.ExpiresAt.Equal(t0.Add(24*time.Hour)) || !cmd.At.Equal(t0) {
		t.Errorf("mail command: %+v", cmd)
	}
	token, err := e.keys.Mint(cmd.Kid, cmd.Purpose, cmd.Scope, cmd.MintEventID)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := link.ID(token); err != nil || id != linkA1 {
		t.Errorf("re-derived token maps to %q (%v), want %q", id, err, linkA1)
	}
	if bytes.Contains(raw, []byte(token)) || bytes.Contains(raw, []byte(strings.SplitN(token, ".", 2)[1])) {
		t.Errorf("the mail command carries the token: %s", raw)
	}
	if v := st.Verdict(linkA1, t0.Add(time.Minute)); !v.OK {
		t.Errorf("fresh link refused: %s", v.Reason)
	}

	scopeB := scope.Signin("acme", "bob")
	stB, seqB := e.scopeState(scopeB)

	// A second request for alice supersedes her first link.
	e.clk.Advance(time.Hour)
	seqA2 := e.publish(signin("evt-a2", "alice"))
	e.waitFor("third mail command", func() bool { return e.mailCount() == 3 })
	linkA2 := e.linkIDOf(events.PurposeSignin, "acme", "evt-a2")
	st2, _ := e.scopeState(scopeA)
	if st2.LinkID != linkA2 || st2.LinkID == linkA1 || st2.Supersedes != linkA1 || st2.ActionSeq != seqA2 ||
		!st2.ValidFrom.Equal(t0.Add(time.Hour)) || !st2.ExpiresAt.Equal(t0.Add(25*time.Hour)) {
		t.Errorf("scope after the second request: %+v", st2)
	}
	if ev2 := e.issued(linkA2); ev2.Supersedes != linkA1 {
		t.Errorf("second issued event supersedes %q, want %q", ev2.Supersedes, linkA1)
	}
	if v := st2.Verdict(linkA1, e.clk.Now()); v.Reason != events.ReasonSuperseded {
		t.Errorf("old link: %+v, want superseded", v)
	}
	if v := st2.Verdict(linkA2, e.clk.Now()); !v.OK {
		t.Errorf("new link: %+v", v)
	}
	if _, n := e.count(e.scopesR, scopeA); n != 2 {
		t.Errorf("alice's scope has %d states, want 2", n)
	}

	// Bob's scope is untouched.
	stB2, seqB2 := e.scopeState(scopeB)
	if seqB2 != seqB || !statesEqual(stB, stB2) {
		t.Errorf("bob's scope changed: seq %d -> %d", seqB, seqB2)
	}
	if got := e.metric(e.reg, "linkpipe_issuer_actions_total", map[string]string{"subject": events.SubjectSigninRequested, "outcome": "issued"}); got != 3 {
		t.Errorf("issued count %v, want 3", got)
	}
}

func statesEqual(a, b scope.State) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestSameActionTwiceYieldsOneLinkAndOneMail(t *testing.T) {
	e := newEnv(t)
	e.start()
	a := signin("evt-dup", "carol")
	seq1 := e.publish(a)
	// Within the de-duplication window JetStream drops the copy.
	ack, err := events.Publish(e.ctx, e.js, a)
	if err != nil || !ack.Duplicate {
		t.Fatalf("second publish in the window: %+v %v, want a duplicate", ack, err)
	}
	e.waitIdle()
	// After the window: the same action arrives again as a new message.
	seq2 := e.publishRaw(events.SubjectSigninRequested, "evt-dup-after-window", e.marshal(a))
	if seq2 == seq1 {
		t.Fatal("re-publish was deduplicated; the test needs a new message")
	}
	e.waitIdle()

	assertOne := func(stage string) {
		t.Helper()
		if n := e.mailCount(); n != 1 {
			t.Errorf("%s: %d mail commands, want 1", stage, n)
		}
		if subs, msgs := e.count(e.links, "links.*.issued"); subs != 1 || msgs != 1 {
			t.Errorf("%s: %d issued links in %d messages, want 1", stage, subs, msgs)
		}
		if _, msgs := e.count(e.scopesR, scope.Signin("acme", "carol")); msgs != 1 {
			t.Errorf("%s: %d scope states, want 1", stage, msgs)
		}
	}
	assertOne("same replica")
	// The ledger records the action and its link, never the token.
	var entries int
	if err := e.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(issuer.Buckets()[0])).ForEach(func(k, v []byte) error {
			entries++
			var rec struct {
				LinkID string `json:"link_id"`
			}
			if err := json.Unmarshal(v, &rec); err != nil || rec.LinkID != e.linkIDOf(events.PurposeSignin, "acme", "evt-dup") {
				t.Errorf("ledger entry %s = %s", k, v)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if entries != 1 {
		t.Errorf("%d ledger entries, want 1", entries)
	}
	if got := e.metric(e.reg, "linkpipe_issuer_actions_total", map[string]string{"outcome": "duplicate"}); got != 1 {
		t.Errorf("duplicates counted: %v, want 1", got)
	}

	// Another replica, whose ledger knows nothing, gets it once more:
	// JetStream alone tells it the work is done.
	e.stop()
	iss2, reg2 := e.newIssuer(storetest.MustOpen(t, "issuer", issuer.Buckets()...))
	e.run(iss2)
	e.publishRaw(events.SubjectSigninRequested, "evt-dup-third", e.marshal(a))
	e.waitIdle()
	assertOne("other replica")
	if got := e.metric(reg2, "linkpipe_issuer_actions_total", map[string]string{"outcome": "duplicate"}); got != 1 {
		t.Errorf("other replica counted %v duplicates, want 1", got)
	}
}

func TestPoisonIsDeadLetteredAndNeverBlocks(t *testing.T) {
	e := newEnv(t)
	e.start()
	const subj = events.SubjectSigninRequested
	obj := func(fields string) []byte {
		return []byte(`{"event_id":"evt-p","practice_id":"acme",` + fields + `}`)
	}
	client := `"client":{"id":"c1","email":"c1@example.com","name":"Pat"}`
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"malformed JSON", []byte(`{"event_id":"evt-p",`), []string{"malformed event"}},
		{"not an object", []byte(`[1,2,3]`), []string{"malformed event"}},
		{"trailing data", append(obj(client), []byte(`{}`)...), []string{"malformed event", "data after"}},
		{"missing client", obj(`"return_to":"/x"`), []string{"client.id: required"}},
		{"missing event id", []byte(`{"practice_id":"acme",` + client + `}`), []string{"event_id: required"}},
		{"missing email", obj(`"client":{"id":"c1"}`), []string{"client.email: required"}},
		{"invalid email", obj(`"client":{"id":"c1","email":"not-an-address"}`), []string{"client.email", "not a valid email"}},
		{"CRLF in email", obj(`"client":{"id":"c1","email":"c1@example.com\r\nBcc: x@evil.example"}`), []string{"client.email", "control character"}},
		{"CRLF in name", obj(`"client":{"id":"c1","email":"c1@example.com","name":"Pat\r\nBcc: x@evil.example"}`), []string{"client.name", "control character"}},
		{"unknown field", obj(client + `,"surprise":true`), []string{"malformed event", `unknown field "surprise"`}},
		{"version 2", obj(client + `,"version":2`), []string{"unsupported event version", "version 2"}},
		{"bad return_to", obj(client + `,"return_to":"https://evil.example/"`), []string{"return_to"}},
		{"1 MB field", obj(`"client":{"id":"c1","email":"c1@example.com","name":"` + strings.Repeat("x", 1_000_000) + `"}`),
			[]string{"event too large", "1000", "65536"}},
	}
	seqs := make([]uint64, len(cases))
	for i, c := range cases {
		seqs[i] = e.publishRaw(subj, "poison-"+strconv.Itoa(i), c.data)
	}
	okSeq := e.publish(signin("evt-after-poison", "dave"))
	e.waitFor("the valid action's mail", func() bool { return e.mailCount() == 1 })
	e.waitFor("every dead letter", func() bool { return len(e.deadLetters()) == len(cases) })
	e.waitIdle()

	dl := e.deadLetters()
	for i, c := range cases {
		reason, ok := dl[strconv.FormatUint(seqs[i], 10)]
		if !ok {
			t.Errorf("%s: not dead-lettered", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(reason, w) {
				t.Errorf("%s: reason %q does not mention %q", c.name, reason, w)
			}
		}
	}
	if _, ok := dl[strconv.FormatUint(okSeq, 10)]; ok {
		t.Error("the valid action was dead-lettered")
	}
	if got := e.metric(e.reg, "linkpipe_issuer_dead_letters_total", map[string]string{"subject": subj}); got != float64(len(cases)) {
		t.Errorf("dead letters counted: %v, want %d", got, len(cases))
	}
	// The stream keeps at most 64 KiB of a poison message.
	s, err := e.js.Stream(e.ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	// The big one's dead letter (handlers run in parallel: dead letters
	// are not in ACTIONS order).
	big := strconv.FormatUint(seqs[len(cases)-1], 10)
	var m *jetstream.RawStreamMsg
	for seq := uint64(1); m == nil; seq++ {
		msg, err := s.GetMsg(e.ctx, seq, jetstream.WithGetMsgSubject(bus.DeadLetterPrefix+"actions"))
		if err != nil {
			t.Fatalf("the big action's dead letter: %v", err)
		}
		if msg.Header.Get(bus.HeaderSourceSeq) == big {
			m = msg
		}
		seq = msg.Sequence
	}
	if len(m.Data) > 64<<10 || m.Header.Get(bus.HeaderOriginalBytes) != strconv.Itoa(len(cases[len(cases)-1].data)) {
		t.Errorf("big dead letter: %d bytes kept, header %q", len(m.Data), m.Header.Get(bus.HeaderOriginalBytes))
	}
}

func TestPracticePolicyBoundsAndTTL(t *testing.T) {
	e := newEnv(t)
	e.start()
	update := func(eventID, ttl string) *events.PracticeUpdated {
		return &events.PracticeUpdated{
			Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
			Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "front@acme.example", PortalURL: "https://portal.acme.example"},
			Policy:   &events.Policy{SigninTTL: ttl},
		}
	}
	badSeq := e.publishRaw(events.SubjectPracticeUpdated, "evt-p100", e.marshal(update("evt-p100", "100h")))
	e.publish(update("evt-p2", "2h"))
	e.publish(signin("evt-s1", "frank"))
	e.waitFor("the sign-in's mail", func() bool { return e.mailCount() == 1 })
	e.waitIdle()

	reason := e.deadLetters()[strconv.FormatUint(badSeq, 10)]
	if !strings.Contains(reason, "policy.signin_ttl") {
		t.Errorf("100h dead letter reason %q does not name policy.signin_ttl", reason)
	}
	if got := e.dir.Get("acme"); got.Policy.SigninTTL != 2*time.Hour || got.Name != "Acme Therapy" || !got.Known {
		t.Errorf("settings: %+v", got)
	}
	linkID := e.linkIDOf(events.PurposeSignin, "acme", "evt-s1")
	st, _ := e.scopeState(scope.Signin("acme", "frank"))
	if st.LinkID != linkID || !st.ExpiresAt.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("scope: link %s expires %s, want %s at %s", st.LinkID, st.ExpiresAt, linkID, t0.Add(2*time.Hour))
	}
	if cmd, _ := e.mailCmd(linkID + "-signin"); !cmd.ExpiresAt.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("mail command expires %s", cmd.ExpiresAt)
	}
	if got := e.metric(e.reg, "linkpipe_issuer_actions_total", map[string]string{"subject": events.SubjectPracticeUpdated, "outcome": "stored"}); got != 1 {
		t.Errorf("stored count %v, want 1", got)
	}

	// An older update redelivered after a newer one does not undo it.
	if wrote, err := e.dir.PutIfNewer(e.ctx, update("evt-p0", "30m"), badSeq); err != nil || wrote {
		t.Errorf("older update: wrote %v, %v", wrote, err)
	}
	if got := e.dir.Get("acme").Policy.SigninTTL; got != 2*time.Hour {
		t.Errorf("older update applied: ttl %s", got)
	}
}

func TestNewerRequestWinsWhateverTheOrder(t *testing.T) {
	e := newEnv(t)
	e.publish(signin("evt-old", "gina"))
	e.publish(signin("evt-new", "gina"))
	msgs := e.fetch(2)
	// The newer action is handled first; the older one must not take the
	// scope back.
	for _, m := range []int{1, 0} {
		if err := e.iss.Handle(e.ctx, msgs[m]); err != nil {
			t.Fatal(err)
		}
	}
	linkOld := e.linkIDOf(events.PurposeSignin, "acme", "evt-old")
	linkNew := e.linkIDOf(events.PurposeSignin, "acme", "evt-new")
	st, _ := e.scopeState(scope.Signin("acme", "gina"))
	if st.LinkID != linkNew {
		t.Fatalf("scope's link is %s, want the newer %s", st.LinkID, linkNew)
	}
	if _, n := e.count(e.scopesR, scope.Signin("acme", "gina")); n != 1 {
		t.Errorf("%d scope states, want 1", n)
	}
	// The older link exists (its clicks say superseded, not not-found) but
	// is not mailed.
	e.issued(linkOld)
	if v := st.Verdict(linkOld, t0); v.Reason != events.ReasonSuperseded {
		t.Errorf("older link: %+v", v)
	}
	if n := e.mailCount(); n != 1 {
		t.Errorf("%d mail commands, want 1 (the newer link's)", n)
	}
	e.mailCmd(linkNew + "-signin")
}

func TestResumesAfterCrashBetweenScopeWriteAndIssued(t *testing.T) {
	e := newEnv(t)
	seq := e.publish(signin("evt-r", "hank"))
	linkID := e.linkIDOf(events.PurposeSignin, "acme", "evt-r")
	// A previous attempt, at another time, wrote the scope and died.
	from := t0.Add(-10 * time.Minute)
	prior := scope.State{Change: scope.ChangeIssued, LinkID: linkID, Purpose: events.PurposeSignin, OneTime: true,
		ValidFrom: from, ExpiresAt: from.Add(24 * time.Hour), EventID: "evt-r", ActionSeq: seq, At: from}
	if _, err := scope.NewStore(e.js).Update(e.ctx, scope.Signin("acme", "hank"), 0, &prior); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.waitFor("the mail", func() bool { return e.mailCount() == 1 })
	e.waitIdle()
	if _, n := e.count(e.scopesR, scope.Signin("acme", "hank")); n != 1 {
		t.Errorf("%d scope states, want 1 (no second write)", n)
	}
	ev := e.issued(linkID)
	if !ev.ValidFrom.Equal(from) || !ev.ExpiresAt.Equal(from.Add(24*time.Hour)) || !ev.At.Equal(from) {
		t.Errorf("issued event window %s..%s at %s, want the scope's", ev.ValidFrom, ev.ExpiresAt, ev.At)
	}
	if cmd, _ := e.mailCmd(linkID + "-signin"); !cmd.ExpiresAt.Equal(from.Add(24 * time.Hour)) {
		t.Errorf("mail expires %s", cmd.ExpiresAt)
	}
}

func TestTransientFailureIsRetried(t *testing.T) {
	e := newEnv(t)
	if err := e.js.DeleteStream(e.ctx, bus.StreamScopes); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.publish(signin("evt-t", "ivy"))
	e.waitFor("a retry", func() bool {
		return e.metric(e.reg, "linkpipe_issuer_actions_total", map[string]string{"outcome": "retry"}) >= 1
	})
	if n := e.mailCount(); n != 0 {
		t.Fatalf("mail queued without a scope: %d", n)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := bus.Setup(ctx, e.js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the mail after recovery", func() bool { return e.mailCount() == 1 })
	e.waitIdle()
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("a transient failure was dead-lettered: %v", dl)
	}
}

func TestDocumentSharedIsIndependentOfSignin(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.publish(signin("evt-s", "jo"))
	doc := &events.DocumentShared{
		Envelope: events.Envelope{EventID: "evt-d", PracticeID: "acme"},
		Client:   events.Client{ID: "jo", Email: "jo@example.com", Name: "Jo"},
		Document: events.Document{ID: "doc-9", Title: "Care plan"},
		ShareID:  "sh-1",
	}
	e.publish(doc)
	e.waitFor("two mails", func() bool { return e.mailCount() == 2 })
	e.publish(signin("evt-s2", "jo"))
	e.waitFor("three mails", func() bool { return e.mailCount() == 3 })
	e.waitIdle()

	linkD := e.linkIDOf(events.PurposeDocument, "acme", "evt-d")
	scopeD := scope.Document("acme", "jo", "sh-1")
	st, _ := e.scopeState(scopeD)
	if st.LinkID != linkD || st.Purpose != events.PurposeDocument || !st.OneTime || !st.ExpiresAt.Equal(t0.Add(72*time.Hour)) {
		t.Errorf("document scope: %+v", st)
	}
	if _, n := e.count(e.scopesR, scopeD); n != 1 {
		t.Errorf("a sign-in touched the document scope: %d states", n)
	}
	if v := st.Verdict(linkD, t0.Add(time.Hour)); !v.OK {
		t.Errorf("document link after a newer sign-in: %+v", v)
	}
	ev := e.issued(linkD)
	if ev.Purpose != events.PurposeDocument || ev.DocumentID != "doc-9" || ev.ShareID != "sh-1" || scope.OfLink(&ev) != scopeD {
		t.Errorf("document issued event: %+v", ev)
	}
	cmd, _ := e.mailCmd(linkD + "-" + mail.KindDocument)
	if cmd.Kind != mail.KindDocument || cmd.Purpose != events.PurposeDocument || cmd.Document == nil ||
		*cmd.Document != doc.Document || cmd.MintEventID != "evt-d" {
		t.Errorf("document mail command: %+v", cmd)
	}
}
