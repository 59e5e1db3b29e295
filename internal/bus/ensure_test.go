package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
)

// A bare server: Ensure creates every stream, consumer and bucket, exactly
// as Setup would configure them.
func TestEnsureCreatesWhatIsMissing(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, js, err := bus.Connect(bus.ConnectOptions{URL: srv.ClientURL(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs bytes.Buffer
	diffs, err := bus.Ensure(ctx, js, bus.Options{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil || len(diffs) != 0 {
		t.Fatalf("diffs %v err %v", diffs, err)
	}
	for _, cfg := range bus.StreamConfigs(bus.Options{}) {
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Name, err)
		}
		if d := bus.StreamDiff(cfg, s.CachedInfo().Config); len(d) != 0 {
			t.Errorf("%s created as %v", cfg.Name, d)
		}
	}
	for stream, cc := range bus.ConsumerConfigs() {
		if _, err := js.Consumer(ctx, stream, cc.Durable); err != nil {
			t.Errorf("consumer %s: %v", cc.Durable, err)
		}
	}
	for _, b := range bus.BucketConfigs(bus.Options{}) {
		if _, err := js.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
	// A second run (every other worker) finds everything as it should be.
	if diffs, err := bus.Ensure(ctx, js, bus.Options{}, slog.New(slog.NewJSONHandler(&logs, nil))); err != nil || len(diffs) != 0 {
		t.Fatalf("second run: diffs %v err %v", diffs, err)
	}
	if logs.Len() != 0 {
		t.Errorf("nothing to report, yet logged:\n%s", logs.String())
	}
}

// A stream configured otherwise (by hand, or by an older linkpipe) is
// reported field by field at warn and left as it is; Setup updates it.
func TestEnsureReportsDifferencesAndLeavesThem(t *testing.T) {
	s := bustest.Start(t)
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, bus.StreamMail, bus.ConsumerMailer)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := cons.CachedInfo().Config
	ccfg.AckWait = 2 * time.Second
	if _, err := js.UpdateConsumer(ctx, bus.StreamMail, ccfg); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	diffs, err := bus.Ensure(ctx, js, bus.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bus.Difference{
		"max_age":  {Of: "stream DEADLETTER", Field: "max_age", Want: (30 * 24 * time.Hour).String(), Have: time.Hour.String()},
		"ack_wait": {Of: "consumer MAIL/mailer", Field: "ack_wait", Want: (15 * time.Second).String(), Have: (2 * time.Second).String()},
	}
	if len(diffs) != len(want) {
		t.Fatalf("diffs %v, want %v", diffs, want)
	}
	for _, d := range diffs {
		if want[d.Field] != d {
			t.Errorf("diff %v, want %v", d, want[d.Field])
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one warn line per difference, got:\n%s", logs.String())
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["level"] != "WARN" || rec[bus.KeyStream] == nil || rec[bus.KeyField] == nil || rec[bus.KeyWant] == nil || rec[bus.KeyHave] == nil {
			t.Errorf("log line lacks its keys: %s", l)
		}
	}
	if got := streamConfig(t, js, bus.StreamDeadLetter).MaxAge; got != time.Hour {
		t.Errorf("Ensure changed max_age to %v", got)
	}

	// Setup (linkpipe setup, admin) puts linkpipe's configuration back.
	if err := bus.Setup(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	if diffs, err := bus.Ensure(ctx, js, bus.Options{}, log); err != nil || len(diffs) != 0 {
		t.Fatalf("after Setup: diffs %v err %v", diffs, err)
	}
}

// One worker started with LINKPIPE_REPLICAS=3 against streams of one
// replica reports the difference and rescales nothing.
func TestEnsureNeverRescales(t *testing.T) {
	s := bustest.Start(t)
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	diffs, err := bus.Ensure(ctx, js, bus.Options{Replicas: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range diffs {
		if d.Field == "num_replicas" && d.Want == "3" && d.Have == "1" {
			n++
		}
	}
	// Every stream and both buckets.
	if want := len(bus.StreamConfigs(bus.Options{})) + len(bus.BucketConfigs(bus.Options{})); n != want {
		t.Fatalf("%d replica differences, want %d: %v", n, want, diffs)
	}
	for _, cfg := range bus.StreamConfigs(bus.Options{}) {
		if got := streamConfig(t, js, cfg.Name).Replicas; got != 1 {
			t.Errorf("%s rescaled to %d", cfg.Name, got)
		}
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"nats://127.0.0.1:4222":                          "nats://127.0.0.1:4222",
		"nats://alice:s3cret@nats-1:4222":                "nats://alice:xxxxx@nats-1:4222",
		"nats://t0ken@nats-1:4222":                       "nats://xxxxx@nats-1:4222",
		"tls://a:p@n1:4222, nats://n2:4222,nats://tk@n3": "tls://a:xxxxx@n1:4222,nats://n2:4222,nats://xxxxx@n3",
		"nats://a:p%zz@n1":                               "xxxxx",
	}
	for in, want := range cases {
		if got := bus.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// A connect that fails names the server without its password.
func TestConnectErrorHidesThePassword(t *testing.T) {
	_, _, err := bus.Connect(bus.ConnectOptions{URL: "nats://alice:s3cret@127.0.0.1:port", Name: t.Name()})
	if err == nil {
		t.Fatal("connected to an invalid URL")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows the password: %v", err)
	}
	_, _, err = bus.Connect(bus.ConnectOptions{URL: "nats://alice:s3cret@127.0.0.1:4222", Name: t.Name(), NKeySeedFile: "/nonexistent"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err %v", err)
	}
}
