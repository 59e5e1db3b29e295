package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// A stream a worker left as it found it (bus.Ensure) is put back by
// `linkpipe setup`, which says what it changed.
func TestSetupUpdatesWhatWorkersLeave(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.StreamActions)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"setup"}, env(map[string]string{"NATS_URL": srv.URL}), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "updated stream ACTIONS max_age: 1h0m0s -> 168h0m0s") {
		t.Errorf("output:\n%s", out.String())
	}
	s, err = js.Stream(ctx, bus.StreamActions)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 7*24*time.Hour {
		t.Errorf("max age %v after setup", got)
	}
	// Bad settings are bad configuration naming them.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"setup", "-nats-nkey", "/nonexistent"}, "NATS_NKEY"},
		{[]string{"setup", "-replicas", "2"}, "LINKPIPE_REPLICAS"},
		{[]string{"publish", "signin", "-nats-tls-ca", "/nonexistent", "--practice", "p", "--client", "c", "--email", "e@x.example"}, "NATS_TLS_CA"},
	} {
		err := run(ctx, c.args, env(nil), &bytes.Buffer{})
		if worker.ExitCode(err) != worker.ExitConfig || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want exit 2 naming %s", c.args, err, c.want)
		}
	}
}
