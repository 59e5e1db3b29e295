// Package nodepublisher_test runs the Node publisher example (publisher.mjs,
// the official `nats` npm package) against a real pipeline: the dev stack's
// in-process nats-server with JetStream, issuer, mailer and redeemer.
package nodepublisher_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/npmdeps"
)

// TestNodePublisherSendsSigninAndReadsItsEvents: the example publishes
// actions.signin.requested twice with the same Nats-Msg-Id (JetStream keeps
// one), finds its link's issued event and reads that link's events until
// the email is sent. What it published and what it read validate against
// the contract's JSON Schemas.
func TestNodePublisherSendsSigninAndReadsItsEvents(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("the Node example needs node, which is not on PATH")
	}
	if err := npmdeps.Install(".", filepath.Join("node_modules", "nats", "package.json")); errors.Is(err, npmdeps.ErrNoNPM) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	const eventID = "node-example-1"
	cmd := exec.CommandContext(ctx, node, "publisher.mjs")
	cmd.Env = append(os.Environ(), "NATS_URL="+st.NATSURL, "PRACTICE_ID="+devstack.DemoPractice,
		"CLIENT_ID=node-c1", "CLIENT_EMAIL=node.c1@example.com", "EVENT_ID="+eventID, "UNTIL=sent,failed", "TIMEOUT_MS=30000")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node publisher.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	t.Logf("publisher.mjs:\n%s", out)

	schemas := compileSchemas(t)
	type line struct {
		Published string          `json:"published"`
		Seq       uint64          `json:"seq"`
		Duplicate bool            `json:"duplicate"`
		Subject   string          `json:"subject"`
		Event     json.RawMessage `json:"event"`
	}
	var pubs []line
	var evs []events.LinkEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		if l.Published != "" {
			pubs = append(pubs, l)
			continue
		}
		var ev events.LinkEvent
		if err := json.Unmarshal(l.Event, &ev); err != nil {
			t.Fatal(err)
		}
		if l.Subject != ev.Subject() {
			t.Errorf("event on %s has subject %s", l.Subject, ev.Subject())
		}
		if err := validate(schemas, "links."+ev.Type+".json", l.Event); err != nil {
			t.Errorf("%s fails its schema: %v", l.Subject, err)
		}
		evs = append(evs, ev)
	}
	if len(pubs) != 2 || pubs[0].Duplicate || !pubs[1].Duplicate || pubs[0].Seq != pubs[1].Seq {
		t.Fatalf("want one publish and one deduplicated retry, got %+v", pubs)
	}
	if len(evs) < 2 || evs[0].Type != events.TypeIssued || evs[0].CauseEventID != eventID || evs[len(evs)-1].Type != events.TypeSent {
		t.Fatalf("want issued (caused by %s) ... sent, got %+v", eventID, evs)
	}
	for _, ev := range evs {
		if ev.LinkID != evs[0].LinkID || ev.ClientID != "node-c1" || ev.PracticeID != devstack.DemoPractice {
			t.Errorf("event of another link or client: %+v", ev)
		}
	}

	// What the example put on the ACTIONS stream: the contract's shape,
	// with the event id as Nats-Msg-Id.
	s, err := st.JetStream().Stream(ctx, events.StreamActions)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, events.SubjectSigninRequested)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != eventID {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, eventID)
	}
	if err := validate(schemas, events.SubjectSigninRequested+".json", m.Data); err != nil {
		t.Errorf("the published action fails its schema: %v\n%s", err, m.Data)
	}
	if _, err := events.Decode(events.SubjectSigninRequested, m.Data); err != nil {
		t.Errorf("the published action does not decode: %v", err)
	}
}

type schemaSet struct {
	c    *jsonschema.Compiler
	base string
}

// compileSchemas loads events/schema/*.json under their $id.
func compileSchemas(t *testing.T) schemaSet {
	t.Helper()
	const base = "https://github.com/linkpipe/linkpipe/events/schema/"
	files, err := filepath.Glob(filepath.Join("..", "..", "events", "schema", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("events/schema: %v %v", files, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(base+filepath.Base(f), doc); err != nil {
			t.Fatal(err)
		}
	}
	return schemaSet{c: c, base: base}
}

func validate(s schemaSet, name string, data []byte) error {
	sch, err := s.c.Compile(s.base + name)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(data)))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}
