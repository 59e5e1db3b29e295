package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// childEnv makes the test binary run main() instead of the tests: the
// crash test starts the real issuer as a separate process this way.
const childEnv = "LINKPIPE_ISSUER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var testKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, getenv(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, v := range []string{"NATS_URL", "LINKPIPE_DATA_DIR", "LINKPIPE_LINK_KEY", "LINKPIPE_ADMIN_ADDR", "LINKPIPE_REPLICAS"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-h does not list %s:\n%s", v, out.String())
		}
	}
}

func TestMissingOrBadSettingStops(t *testing.T) {
	for name, c := range map[string]struct {
		env  map[string]string
		want string
	}{
		"missing link key": {map[string]string{}, "LINKPIPE_LINK_KEY"},
		"bad link key":     {map[string]string{"LINKPIPE_LINK_KEY": "c2hvcnQ="}, "LINKPIPE_LINK_KEY"},
		"bad nats url":     {map[string]string{"LINKPIPE_LINK_KEY": testKey, "NATS_URL": "http://x"}, "NATS_URL"},
		"bad admin addr":   {map[string]string{"LINKPIPE_LINK_KEY": testKey, "LINKPIPE_ADMIN_ADDR": "nope"}, "LINKPIPE_ADMIN_ADDR"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(t.Context(), nil, getenv(c.env), io.Discard)
			if err == nil || !errors.Is(err, worker.ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a usage error naming %s", err, c.want)
			}
		})
	}
}

// child is the issuer running as a separate process.
type child struct {
	cmd   *exec.Cmd
	admin string
	done  chan error
}

func startChild(t *testing.T, natsURL, dataDir, logName string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"NATS_URL="+natsURL, "LINKPIPE_DATA_DIR="+dataDir,
		"LINKPIPE_LINK_KEY="+testKey, "LINKPIPE_ADMIN_ADDR=127.0.0.1:0")
	logf, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s (tail):\n%s", logName, b)
		}
	})
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "issuer ready admin="); ok {
				ready <- addr
			}
		}
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-c.done
		}
	})
	select {
	case c.admin = <-ready:
	case err := <-c.done:
		t.Fatalf("issuer exited before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("issuer not ready after 30s")
	}
	return c
}

func TestHelpAndBadSettingExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"-h"}, nil, 0, "LINKPIPE_LINK_KEY"},
		{nil, []string{"LINKPIPE_LINK_KEY="}, 2, "LINKPIPE_LINK_KEY is required"},
	} {
		cmd := exec.Command(os.Args[0], c.args...)
		cmd.Env = append(os.Environ(), append([]string{childEnv + "=1"}, c.env...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("issuer %v: exit %d, output %q; want exit %d mentioning %s", c.args, code, out, c.code, c.want)
		}
	}
}

// TestCrashAndRestartIssuesEveryLinkOnce runs the real issuer process,
// kills it with SIGKILL in the middle of a stream of sign-in requests, and
// restarts it on the same data directory: every client must end up with
// exactly one link and one mail command.
func TestCrashAndRestartIssuesEveryLinkOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test waits out the issuer consumer's 10s AckWait; skipped with -short")
	}
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	mailR := bus.NewReader(js, bus.StreamMail)
	linksR := bus.NewReader(js, bus.StreamLinks)
	scopesR := bus.NewReader(js, bus.StreamScopes)
	subjects := func(r *bus.Reader, filter string) map[string]uint64 {
		t.Helper()
		subs, err := r.Subjects(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		return subs
	}
	mailCount := func() int { return len(subjects(mailR, bus.MailCommandPrefix+">")) }

	const n = 200
	first := startChild(t, srv.URL, dataDir, "issuer-1.log")

	// Publish in bursts so that the kill lands while work is in flight.
	var pub sync.WaitGroup
	pubErr := make(chan error, 1)
	pub.Go(func() {
		for i := range n {
			a := &events.SigninRequested{
				Envelope: events.Envelope{EventID: "evt-" + strconv.Itoa(i), PracticeID: "acme"},
				Client:   events.Client{ID: "client-" + strconv.Itoa(i), Email: "c" + strconv.Itoa(i) + "@example.com"},
			}
			if _, err := events.Publish(ctx, js, a); err != nil {
				pubErr <- err
				return
			}
			if i%20 == 19 {
				time.Sleep(15 * time.Millisecond)
			}
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for mailCount() < n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d mail commands after 60s", mailCount())
		}
		time.Sleep(time.Millisecond)
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	atKill := mailCount()
	t.Logf("SIGKILL with %d of %d mail commands queued", atKill, n)
	if atKill >= n {
		t.Fatalf("the issuer finished before it was killed (%d mail commands); the test proves nothing", atKill)
	}
	pub.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}

	second := startChild(t, srv.URL, dataDir, "issuer-2.log")
	cons, err := js.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	deadline = time.Now().Add(90 * time.Second) // messages the first process held come back after AckWait (10s)
	for {
		info, err = cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= n && info.NumPending == 0 && info.NumAckPending == 0 && mailCount() >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done after restart: %d mail commands, consumer %+v", mailCount(), info)
		}
		time.Sleep(20 * time.Millisecond)
	}

	mails := subjects(mailR, bus.MailCommandPrefix+">")
	issued := subjects(linksR, "links.*.issued")
	scopes := subjects(scopesR, scope.All)
	if len(mails) != n || len(issued) != n || len(scopes) != n {
		t.Errorf("%d mail commands, %d issued links, %d scopes; want %d of each", len(mails), len(issued), len(scopes), n)
	}
	for s, c := range issued {
		if c != 1 {
			t.Errorf("%s holds %d messages", s, c)
		}
	}
	for s, c := range scopes {
		if c != 1 {
			t.Errorf("scope %s was written %d times, want once", s, c)
		}
	}
	keys, err := link.ParseKeyring(testKey)
	if err != nil {
		t.Fatal(err)
	}
	seenScope := map[string]string{}
	for i := range n {
		eventID, clientID := "evt-"+strconv.Itoa(i), "client-"+strconv.Itoa(i)
		tok, _ := keys.Mint(keys.CurrentKid(), events.PurposeSignin, scope.Signin("acme", clientID), eventID)
		linkID, _ := link.ID(tok)
		var ev events.LinkEvent
		if _, err := linksR.LastJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev); err != nil {
			t.Errorf("%s: issued event: %v", clientID, err)
			continue
		}
		subject := scope.OfLink(&ev)
		if other, dup := seenScope[subject]; dup {
			t.Errorf("scope %s has two issued links: %s and %s", subject, other, linkID)
		}
		seenScope[subject] = linkID
		var st scope.State
		if _, err := scopesR.LastJSON(ctx, subject, &st); err != nil || st.LinkID != linkID {
			t.Errorf("%s: scope link %q (%v), want %s", clientID, st.LinkID, err, linkID)
		}
		var cmd mail.Command
		if _, err := mailR.LastJSON(ctx, bus.MailCommandPrefix+linkID+"-"+mail.KindSignin, &cmd); err != nil || cmd.To.ID != clientID {
			t.Errorf("%s: mail command %+v (%v)", clientID, cmd, err)
		}
	}
	if dl := subjects(bus.NewReader(js, bus.StreamDeadLetter), ">"); len(dl) != 0 {
		t.Errorf("dead letters: %v", dl)
	}

	// The admin endpoints of the running process.
	for path, want := range map[string]string{"/readyz": "ready", "/healthz": "ok", "/metrics": "linkpipe_issuer_actions_total",
		"/support": "Why can&#39;t my client get in?", "/support.json?practice=acme&client=client-7": `"works": true`} {
		resp, err := http.Get("http://" + second.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %.200s", path, resp.StatusCode, body)
		}
	}

	// SIGTERM stops it cleanly.
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("no exit 30s after SIGTERM")
	}
}
