package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// slowSES is an SES endpoint that answers after delay (a request whose
// client gave up in the meantime never reaches the fake: SES did not take
// it).
func slowSES(t *testing.T, fake *sestest.Fake, delay time.Duration) string {
	t.Helper()
	u, err := url.Parse(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
			proxy.ServeHTTP(w, r)
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // first: no handler keeps Close waiting
	return srv.URL
}

func withEndpoint(env []string, endpoint string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_ENDPOINT_URL_SESV2=") {
			out = append(out, kv)
		}
	}
	return append(out, "AWS_ENDPOINT_URL_SESV2="+endpoint)
}

// sentByID counts the fake's accepted emails per mail id.
func sentByID(fake *sestest.Fake) (total int, byID map[string]int) {
	byID = map[string]int{}
	for _, e := range fake.Accepted() {
		byID[e.Headers[mail.HeaderEntityRefID]]++
	}
	return len(fake.Accepted()), byID
}

// TestSIGTERMDrainsTheMailer: a real mailer process gets SIGTERM while
// slow sends are in flight and more commands are queued. It finishes
// what it holds (every email it handed to SES is marked done), hands the
// rest back, and exits 0; a second mailer then sends the rest. In the end
// every mail id went out exactly once: nothing lost, nothing sent twice.
func TestSIGTERMDrainsTheMailer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	fake := sestest.NewFake(t)
	endpoint := slowSES(t, fake, 300*time.Millisecond)
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	env := withEndpoint(append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + srv.URL, "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example", "LINKPIPE_SHUTDOWN_TIMEOUT=20s"}, fake.Env()...), endpoint)

	const n = 60
	want := map[string]bool{}
	for i := range n {
		c := command(t, fmt.Sprintf("evt-%03d", i), fmt.Sprintf("client%03d@example.com", i))
		want[c.MailID] = true
		queue(t, js, c)
	}
	// An ack wait far beyond the test's timeouts: the second mailer can
	// send the rest soon only if the first one handed its commands back.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cons, err := js.Consumer(ctx, bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 10 * time.Minute
	if _, err := js.UpdateConsumer(ctx, bus.StreamMail, cfg); err != nil {
		t.Fatal(err)
	}
	a := startChild(t, append(env, "LINKPIPE_DATA_DIR="+t.TempDir()))
	eventually.True(t, 30*time.Second, func() bool { total, _ := sentByID(fake); return total >= 10 }, "10 emails sent")
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- a.cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("mailer exit after SIGTERM: %v, want 0\n%s", err, tail(a.stderr.String(), 3000))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the mailer did not exit after SIGTERM")
	}
	if !strings.Contains(a.stderr.String(), "stopping: not ready, draining") {
		t.Errorf("no drain logged:\n%s", tail(a.stderr.String(), 2000))
	}
	atExit, byID := sentByID(fake)
	if atExit >= n {
		t.Fatalf("the first mailer sent all %d before it stopped; the test proves nothing", atExit)
	}
	// Everything it handed to SES is recorded as done, so no replica sends
	// it again.
	r := bus.NewReader(js, bus.StreamMail)
	done, err := r.Subjects(ctx, bus.MailDonePrefix+">")
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(byID) {
		t.Errorf("%d emails sent by the stopped mailer, %d marked done", len(byID), len(done))
	}
	t.Logf("the stopped mailer sent %d of %d", atExit, n)

	b := startChild(t, append(env, "LINKPIPE_DATA_DIR="+t.TempDir()))
	eventually.True(t, 60*time.Second, func() bool { _, d := sentByID(fake); return len(d) == n }, "every mail id sent")
	eventually.True(t, 20*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the consumer to drain")
	total, byID := sentByID(fake)
	for id, k := range byID {
		if !want[id] {
			t.Errorf("unexpected mail id %q", id)
		}
		if k != 1 {
			t.Errorf("mail %s sent %d times", id, k)
		}
	}
	if total != n {
		t.Errorf("%d emails for %d mail ids", total, n)
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Wait(); err != nil {
		t.Errorf("second mailer exit: %v", err)
	}
}

// A mailer holding a slow send answers 503 on /readyz as soon as it gets
// SIGTERM, and a second SIGTERM during the drain ends it at once (an
// operator who does not want to wait), by the signal's default action.
func TestSIGTERMNotReadyAtOnceAndASecondStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	fake := sestest.NewFake(t)
	endpoint := slowSES(t, fake, time.Minute) // a send that would hold the drain
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	env := withEndpoint(append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + srv.URL, "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example", "LINKPIPE_SHUTDOWN_TIMEOUT=5m",
		"LINKPIPE_DATA_DIR=" + t.TempDir()}, fake.Env()...), endpoint)
	a := startChild(t, env)
	queue(t, js, command(t, "evt-slow", "slow@example.com"))
	// Wait until the send is in flight: the command is delivered, not acked.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 1
	}, "the send to be in flight")
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Draining: /readyz answers 503 at once, while the send still holds it.
	eventually.True(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + a.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "/readyz to answer 503 while draining")
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- a.cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("exit %v, want killed by SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the second SIGTERM did not stop the mailer")
	}
}
