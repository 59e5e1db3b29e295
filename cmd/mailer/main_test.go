package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
	"github.com/linkpipe/linkpipe/internal/worker"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func linkKey() string { return "k1:" + base64.StdEncoding.EncodeToString(testKey) }

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-h"}, envOf(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, v := range append(config.MailerVars(), config.NATSURL, config.DataDir, config.LinkKey, config.PublicURL,
		config.AdminAddr, config.MailFrom, config.MailDriver, config.AWSRegion, config.AWSEndpoint, config.AWSAccessKey, config.AWSSecretKey) {
		if !strings.Contains(out.String(), v.Env) {
			t.Errorf("-h does not list %s:\n%s", v.Env, out.String())
		}
	}
}

func TestBadConfigNamesTheSetting(t *testing.T) {
	cases := []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{}, "LINKPIPE_LINK_KEY"},
		{map[string]string{"LINKPIPE_LINK_KEY": linkKey()}, "LINKPIPE_MAIL_FROM"},
		{map[string]string{"LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_FROM": "not an address"}, "LINKPIPE_MAIL_FROM"},
		{map[string]string{"LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "smtp"}, "LINKPIPE_MAIL_DRIVER"},
		{map[string]string{"LINKPIPE_LINK_KEY": "short"}, "LINKPIPE_LINK_KEY"},
		{map[string]string{"LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "sink", "LINKPIPE_MAIL_MAX_ATTEMPTS": "0"}, "LINKPIPE_MAIL_MAX_ATTEMPTS"},
		{map[string]string{"LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "sink", "LINKPIPE_MAIL_MAX_ATTEMPTS": "many"}, "LINKPIPE_MAIL_MAX_ATTEMPTS"},
	}
	for _, c := range cases {
		err := run(context.Background(), nil, envOf(c.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.name) || !errors.Is(err, worker.ErrConfig) {
			t.Errorf("%v: got %v, want a config error naming %s", c.env, err, c.name)
		}
	}
}

var buildOnce struct {
	sync.Once
	bin string
	err error
}

// binary builds the real mailer once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "linkpipe-mailer-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "mailer")
		out, err := exec.Command("go", "build", "-o", buildOnce.bin, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.bin != "" {
		os.RemoveAll(filepath.Dir(buildOnce.bin))
	}
	os.Exit(code)
}

func TestBinaryExitsTwoOnBadConfig(t *testing.T) {
	cmd := exec.Command(binary(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LINKPIPE_LINK_KEY=" + linkKey()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr.String(), "LINKPIPE_MAIL_FROM") {
		t.Fatalf("got %v, stderr %q; want exit 2 naming LINKPIPE_MAIL_FROM", err, stderr.String())
	}
	cmd = exec.Command(binary(t), "-h")
	cmd.Env = []string{}
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "AWS_ENDPOINT_URL_SESV2") {
		t.Fatalf("-h: %v\n%s", err, out)
	}
}

// command is the mail command the issuer queues for sign-in event eventID.
func command(t *testing.T, eventID, email string) *mail.Command {
	t.Helper()
	keys := link.NewKeyring("k1", testKey)
	token, err := keys.Mint("k1", events.PurposeSignin, scope.Signin("acme", "c-"+eventID), eventID)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := link.ID(token)
	now := time.Now().UTC()
	return &mail.Command{MailID: id + "-signin", Kind: mail.KindSignin, PracticeID: "acme",
		To: events.Client{ID: "c-" + eventID, Email: email}, LinkID: id, Kid: "k1", Purpose: events.PurposeSignin, Scope: scope.Signin("acme", "c-"+eventID),
		MintEventID: eventID, ValidFrom: now, ExpiresAt: now.Add(24 * time.Hour), CauseEventID: eventID, At: now}
}

func queue(t *testing.T, js jetstream.JetStream, cmd *mail.Command) {
	t.Helper()
	data, _ := json.Marshal(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// What the issuer does first: record the link's address.
	if err := recipient.NewBook(js).Put(ctx, cmd.LinkID, cmd.To); err != nil {
		t.Error(err)
		return
	}
	if _, err := bus.PublishOnce(ctx, js, bus.MailCommandPrefix+cmd.MailID, cmd.MailID, data, nil); err != nil {
		t.Error(err)
	}
}

// readyAddr reads a "mailer ready admin=<addr>" line.
func readyAddr(t *testing.T, r io.Reader) string {
	t.Helper()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "mailer ready admin="); ok {
				lines <- a
				break
			}
		}
		io.Copy(io.Discard, r)
	}()
	select {
	case a := <-lines:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("mailer not ready within 30s")
	}
	return ""
}

func TestSinkDriverServesItsInbox(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	env := map[string]string{"NATS_URL": srv.URL, "LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "sink",
		"LINKPIPE_DATA_DIR": t.TempDir(), "LINKPIPE_ADMIN_ADDR": "127.0.0.1:0", "LINKPIPE_PUBLIC_URL": "https://links.example",
		"LINKPIPE_INBOX_ADDR": "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envOf(env), pw); pw.Close() }()
	// "mailer ready admin=<addr> inbox=<addr>": the inbox has its own
	// listener (LINKPIPE_INBOX_ADDR, loopback by default).
	adminAddr, inboxAddr, ok := strings.Cut(readyAddr(t, pr), " inbox=")
	if !ok {
		t.Fatal("the ready line names no inbox address")
	}
	base, adminBase := "http://"+inboxAddr, "http://"+adminAddr

	cmd := command(t, "evt-sink", "pat@example.com")
	queue(t, js, cmd)
	var inbox []mailer.SinkMessage
	eventually.True(t, 20*time.Second, func() bool {
		resp, err := http.Get(base + "/inbox.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&inbox) == nil && len(inbox) == 1
	}, "the email in /inbox.json")
	if inbox[0].To != "pat@example.com" || inbox[0].From != `"acme" <`+sinkFrom+`>` || !strings.HasPrefix(inbox[0].Links[0], "https://links.example/l/k1.") {
		t.Errorf("inbox %+v", inbox[0])
	}
	for path, want := range map[string]string{base + "/inbox": "pat@example.com", base + "/inbox/1": "Sign in",
		adminBase + "/readyz": "ready", adminBase + "/metrics": "linkpipe_mailer_sent_total 1"} {
		resp, err := http.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d, lacks %q", path, resp.StatusCode, want)
		}
	}
	// The admin address (often on every interface, scraped for metrics)
	// serves no inbox; the inbox answers no foreign Host (DNS rebinding).
	for _, path := range []string{"/inbox", "/inbox.json", "/inbox/1"} {
		resp, err := http.Get(adminBase + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("admin address GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	for host, want := range map[string]int{"attacker.example": http.StatusMisdirectedRequest, "attacker.example:8025": http.StatusMisdirectedRequest,
		"localhost:8025": http.StatusOK, "links.example": http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, base+"/inbox.json", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want != http.StatusOK && strings.Contains(string(b), "pat@example.com")) {
			t.Errorf("inbox with Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop")
	}
}

// The sink's inbox listens on loopback unless the operator says otherwise.
func TestSinkInboxIsLoopbackByDefault(t *testing.T) {
	if d := config.InboxAddr.Default; !admin.IsLoopbackHost(admin.HostOf(d)) {
		t.Fatalf("LINKPIPE_INBOX_ADDR defaults to %q, not a loopback address", d)
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"-h"}, envOf(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "LINKPIPE_INBOX_ADDR") || !strings.Contains(out.String(), config.InboxAddr.Default) {
		t.Fatalf("-h does not list LINKPIPE_INBOX_ADDR and its default:\n%s", out.String())
	}
}

// child is a mailer process.
type child struct {
	cmd    *exec.Cmd
	stderr syncbuf.Buffer
	admin  string
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(binary(t))}
	c.cmd.Env = env
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("mailer %d stderr (tail):\n%s", c.cmd.Process.Pid, tail(c.stderr.String(), 3000))
		}
	})
	c.admin = readyAddr(t, out)
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestKillOneOfTwoMailers runs two real mailer processes against one NATS
// server and aws-ses-v2-local, SIGKILLs one while 200 commands stream in,
// and checks that the survivor delivers the rest: every mail id arrives,
// duplicates only for what the killed one had in flight.
func TestKillOneOfTwoMailers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	local := sestest.StartLocal(t)
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + srv.URL, "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example"}, local.Env()...)
	a := startChild(t, append(env, "LINKPIPE_DATA_DIR="+t.TempDir()))
	b := startChild(t, append(env, "LINKPIPE_DATA_DIR="+t.TempDir()))

	// The killed mailer's unacked commands come back after the consumer's
	// ack wait (60s in production); shorten it so the test takes seconds.
	// The children have already run bus.Setup, which would reset it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 2 * time.Second
	if _, err := js.UpdateConsumer(ctx, bus.StreamMail, cfg); err != nil {
		t.Fatal(err)
	}

	const n = 200
	want := map[string]bool{}
	cmds := make([]*mail.Command, n)
	for i := range n {
		cmds[i] = command(t, fmt.Sprintf("evt-%03d", i), fmt.Sprintf("client%03d@example.com", i))
		want[cmds[i].MailID] = true
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		for _, c := range cmds {
			queue(t, js, c)
			time.Sleep(5 * time.Millisecond) // a steady stream, so the kill lands mid-way
		}
	}()
	received := func() (total int, distinct map[string]int) {
		emails, err := local.Fetch(ctx)
		if err != nil {
			return 0, nil
		}
		distinct = map[string]int{}
		for _, e := range emails {
			distinct[e.Header(mail.HeaderEntityRefID)]++
		}
		return len(emails), distinct
	}
	eventually.True(t, 30*time.Second, func() bool { total, _ := received(); return total >= 60 }, "60 emails")
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
	atKill, _ := received()
	<-published
	eventually.True(t, 40*time.Second, func() bool { _, d := received(); return len(d) == n }, "every mail id in /store")
	eventually.True(t, 20*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the consumer to drain")
	total, distinct := received()
	for id := range distinct {
		if !want[id] {
			t.Errorf("unexpected mail id %q", id)
		}
	}
	dups := total - len(distinct)
	t.Logf("%d emails at the kill; %d emails for %d mail ids in the end: %d duplicate(s)", atKill, total, len(distinct), dups)
	// Only an email in flight in the killed process (sent, not yet marked
	// done) can go out twice; at most its concurrency.
	if dups > 8 {
		t.Errorf("%d duplicates: more than the killed mailer could have had in flight", dups)
	}
	r := bus.NewReader(js, bus.StreamMail)
	if subs, err := r.Subjects(ctx, bus.MailDonePrefix+">"); err != nil || len(subs) != n {
		t.Errorf("%d mail.done markers (%v), want %d", len(subs), err, n)
	}
	if subs, err := bus.NewReader(js, bus.StreamLinks).Subjects(ctx, "links.*.sent"); err != nil || len(subs) != n {
		t.Errorf("%d links with a sent event (%v), want %d", len(subs), err, n)
	}

	// The survivor stops cleanly on SIGTERM.
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Wait(); err != nil {
		t.Errorf("survivor exit: %v", err)
	}
}

// While SES refuses every send (here: sending paused for the account), the
// mailer keeps the emails and retries them, and /readyz answers 503 saying
// why; once SES sends again, the emails go out and /readyz answers 200.
func TestReadyzIs503WhileSESRefusesEverySend(t *testing.T) {
	for _, k := range []string{"AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	fake := sestest.NewFake(t)
	fake.Always(sestest.SendingPaused)
	env := map[string]string{"NATS_URL": srv.URL, "LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "ses",
		"LINKPIPE_MAIL_FROM": "links@acme.example", "LINKPIPE_DATA_DIR": t.TempDir(), "LINKPIPE_ADMIN_ADDR": "127.0.0.1:0",
		"AWS_REGION": sestest.Region, "AWS_ENDPOINT_URL_SESV2": fake.URL, "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test"}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envOf(env), pw); pw.Close() }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	}()
	readyz := "http://" + readyAddr(t, pr) + "/readyz"
	get := func() (int, string) {
		resp, err := http.Get(readyz)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != http.StatusOK {
		t.Fatalf("before any send: %d %s", code, body)
	}
	for i := range mailer.RefusalsNotReady {
		queue(t, js, command(t, fmt.Sprintf("evt-paused-%d", i), "pat@example.com"))
	}
	eventually.True(t, 30*time.Second, func() bool { code, _ := get(); return code == http.StatusServiceUnavailable },
		"/readyz 503 while SES refuses every send")
	if _, body := get(); !strings.Contains(body, "SendingPausedException") {
		t.Errorf("/readyz does not say why: %s", body)
	}
	if n := len(fake.Accepted()); n != 0 {
		t.Fatalf("%d accepted while paused", n)
	}
	fake.Always(sestest.Fault{}) // the operator resumes sending
	eventually.True(t, 60*time.Second, func() bool { return len(fake.Accepted()) == mailer.RefusalsNotReady },
		"every email sent once SES sends again")
	if code, body := get(); code != http.StatusOK {
		t.Errorf("after SES sends again: %d %s", code, body)
	}
}
