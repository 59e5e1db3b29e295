package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// `linkpipe publish unsuppress` publishes actions.address.unsuppressed
// (validated first: a bad address is refused before connecting).
func TestPublishUnsuppress(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"publish", "unsuppress", "--practice", "p", "--email", "not an address",
		"--nats-url", "nats://127.0.0.1:1"}, env(nil), &out)
	if err == nil || !strings.Contains(err.Error(), "email") {
		t.Fatalf("bad address: %v", err)
	}
	srv := bustest.Start(t)
	out.Reset()
	if err := run(context.Background(), []string{"publish", "unsuppress", "--practice", "acme", "--email", "pat@example.com",
		"--event-id", "unsup-cli", "--nats-url", srv.URL}, env(nil), &out); err != nil {
		t.Fatal(err)
	}
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var a events.AddressUnsuppressed
	if _, err := bus.NewReader(js, bus.StreamActions).LastJSON(ctx, events.SubjectAddressUnsuppressed, &a); err != nil {
		t.Fatal(err)
	}
	if a.EventID != "unsup-cli" || a.PracticeID != "acme" || a.Email != "pat@example.com" {
		t.Fatalf("published %+v", a)
	}
	var reply map[string]any
	if json.Unmarshal(out.Bytes(), &reply) != nil || reply["subject"] != events.SubjectAddressUnsuppressed {
		t.Fatalf("output %q", out.String())
	}
}
