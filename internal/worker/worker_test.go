package worker_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/store"
	"github.com/linkpipe/linkpipe/internal/worker"
)

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{flag.ErrHelp, 0},
		{fmt.Errorf("issuer: %w", flag.ErrHelp), 0},
		{worker.BadConfig(errors.New("issuer: LINKPIPE_LINK_KEY is required")), 2},
		{fmt.Errorf("wrapped: %w", worker.BadConfig(errors.New("x"))), 2},
		{worker.ErrConfig, 2},
		{errors.New("issuer: bus: connect: refused"), 1},
		{context.Canceled, 1},
	} {
		var stderr bytes.Buffer
		if got := worker.Exit(&stderr, c.err); got != c.want {
			t.Errorf("Exit(%v) = %d, want %d", c.err, got, c.want)
		}
		if c.want != 0 && !strings.Contains(stderr.String(), c.err.Error()) {
			t.Errorf("Exit(%v) wrote %q to stderr", c.err, stderr.String())
		}
		if c.want == 0 && stderr.Len() != 0 {
			t.Errorf("Exit(%v) wrote %q on success", c.err, stderr.String())
		}
	}
	if worker.BadConfig(nil) != nil {
		t.Error("BadConfig(nil) is not nil")
	}
	err := worker.BadConfig(errors.New("mailer: LINKPIPE_MAIL_FROM is required"))
	if err.Error() != "mailer: LINKPIPE_MAIL_FROM is required" {
		t.Errorf("BadConfig changed the message: %q", err)
	}
}

func TestMissingSettingNamesItAndExitsTwo(t *testing.T) {
	_, err := worker.Parse("issuer", nil, getenv(nil), io.Discard, config.IssuerVars()...)
	var stderr bytes.Buffer
	if code := worker.Exit(&stderr, err); code != 2 || !strings.Contains(stderr.String(), "LINKPIPE_LINK_KEY is required") {
		t.Fatalf("missing link key: exit %d, stderr %q; want 2 naming LINKPIPE_LINK_KEY", code, stderr.String())
	}
	_, err = worker.Parse("issuer", []string{"-nats-url", "http://x"}, getenv(nil), io.Discard, config.IssuerVars()...)
	if !errors.Is(err, worker.ErrConfig) || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("bad flag: %v", err)
	}

	var out bytes.Buffer
	_, err = worker.Parse("issuer", []string{"-h"}, getenv(nil), &out, config.IssuerVars()...)
	if code := worker.ExitCode(err); code != 0 || !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "LINKPIPE_LINK_KEY") {
		t.Fatalf("-h: exit %d (%v), listing %q", code, err, out.String())
	}
}

func values(natsURL, dir string) config.Values {
	return config.Values{config.NATSURL.Env: natsURL, config.DataDir.Env: dir, config.Replicas.Env: "1",
		config.AdminAddr.Env: "127.0.0.1:0"}
}

func TestProcessServesAndNamesItsConnection(t *testing.T) {
	srv := bustest.Start(t)
	var logs bytes.Buffer
	p, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: values(srv.URL, t.TempDir()), LogOutput: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	connz, err := srv.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range connz.Conns {
		names = append(names, c.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "linkpipe-tester") {
		t.Errorf("client names %v, want linkpipe-tester", names)
	}

	hs, err := p.Serve(config.AdminAddr, p.AdminMux())
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	p.Ready(&stdout, "admin", hs.Addr())
	if want := "tester ready admin=" + hs.Addr() + "\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + hs.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	if !strings.Contains(logs.String(), `"worker":"tester"`) {
		t.Errorf("log lines carry no worker name:\n%s", logs.String())
	}

	// An address taken by another server is a bad configuration naming it.
	vals := values(srv.URL, t.TempDir())
	vals[config.AdminAddr.Env] = hs.Addr()
	p2, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if _, err := p2.Serve(config.AdminAddr, p2.AdminMux()); worker.ExitCode(err) != 2 || !strings.Contains(err.Error(), "LINKPIPE_ADMIN_ADDR") {
		t.Errorf("taken address: %v", err)
	}
}

// TestCloseFlushesTheConnection: what a worker published without waiting
// for an answer (an ack is such a publish) just before it exits is on the
// stream after Close, and the bbolt file is released.
func TestCloseFlushesTheConnection(t *testing.T) {
	srv := bustest.Start(t)
	dir := t.TempDir()
	p, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: values(srv.URL, dir)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenStore("tester", "b"); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		if err := p.NC.Publish(fmt.Sprintf("%sflush-%d", events.SubjectSigninRequested+".", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Run(t.Context(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !p.NC.IsClosed() {
		t.Error("connection open after Close")
	}
	p.Close() // twice is fine

	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.StreamActions)
	if err != nil {
		t.Fatal(err)
	}
	// Flushed means the server has them; JetStream stores them a moment
	// later. Unflushed ones would never arrive.
	var stored uint64
	eventually.True(t, 10*time.Second, func() bool {
		info, err := s.Info(ctx)
		if err == nil {
			stored = info.State.Msgs
		}
		return stored == n
	}, fmt.Sprintf("ACTIONS to hold the %d messages published just before Close", n))
	if _, err := s.GetLastMsgForSubject(ctx, fmt.Sprintf("%s.flush-%d", events.SubjectSigninRequested, n-1)); err != nil {
		t.Errorf("the last message published before Close: %v", err)
	}

	db, err := store.Open(dir, "tester")
	if err != nil {
		t.Fatalf("bbolt file still held after Close: %v", err)
	}
	db.Close()
}

func TestStartGivesUpAtTheDeadline(t *testing.T) {
	srv := bustest.Start(t)
	url := srv.URL
	srv.Shutdown()
	srv.WaitForShutdown()

	t0 := time.Now()
	_, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: values(url, t.TempDir()),
		StartupTimeout: 1500 * time.Millisecond})
	if err == nil || worker.ExitCode(err) != 1 || !strings.HasPrefix(err.Error(), "tester: ") {
		t.Fatalf("no server: %v (exit %d), want a failure prefixed tester:", err, worker.ExitCode(err))
	}
	if d := time.Since(t0); d > 15*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestRunPrefixesTheWorkersError(t *testing.T) {
	srv := bustest.Start(t)
	p, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: values(srv.URL, t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	boom := errors.New("boom")
	if err := p.Run(t.Context(), func(context.Context) error { return boom }); !errors.Is(err, boom) || err.Error() != "tester: boom" || worker.ExitCode(err) != 1 {
		t.Errorf("Run: %v", err)
	}
}
