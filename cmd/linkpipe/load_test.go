package main

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// loadReport checks that a load run reported every measure (never its
// figures: the machine is shared).
func loadReport(t *testing.T, out string, n int, roles ...string) {
	t.Helper()
	for _, re := range []string{
		`emails: \d+ actions published by 3 closed-loop publishers in .* \(\d+/s\); \d+ sent in .*: \d+ emails/s; \d+ in (the sink|the SES emulator)`,
		`action→sent latency: p50 \S+ p99 \S+ max \S+`,
		`redeem open loop at 50/s \(POST → 303\): 6 in .*: \d+/s; latency p50 \S+ p99 \S+ max \S+; unexpected answers 0`,
		`used events: all 6`,
		`redeem closed loop, 2 clients \(POST → 303\): 6 in .*; unexpected answers 0`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("the report lacks %q:\n%s", re, out)
		}
	}
	if got := regexp.MustCompile(`sent in .*; (\d+) in the`).FindStringSubmatch(out); got == nil || atoi(got[1]) < n {
		t.Errorf("sink count %v, want every email", got)
	}
	for _, role := range roles {
		if !regexp.MustCompile(`CPU per emailed link:.* ` + regexp.QuoteMeta(role) + `[^;]* \d+\.\d+ ms`).MatchString(out) {
			t.Errorf("no CPU figure of %s per emailed link:\n%s", role, out)
		}
	}
}

func TestLoadEmbeddedReports(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"load", "-actions", "12", "-concurrency", "3", "-redeem", "6", "-redeem-rate", "50",
		"-redeem-concurrency", "2"}, env(nil), &out); err != nil {
		t.Fatalf("load: %v\n%s", err, out.String())
	}
	loadReport(t, out.String(), 12, "linkpipe load")
}

// TestLoadProcessesReports runs the production shape: a nats-server
// process with sync_interval always, and the issuer, mailer and redeemer
// binaries, each a process (built here, so it is slow on a cold cache).
func TestLoadProcessesReports(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts four processes")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain to build the binaries")
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"load", "-shape", "processes", "-sync", "always", "-actions", "12", "-concurrency", "3",
		"-redeem", "6", "-redeem-rate", "50", "-redeem-concurrency", "2"}, env(nil), &out); err != nil {
		t.Fatalf("load: %v\n%s", err, out.String())
	}
	loadReport(t, out.String(), 12, "nats-server", "issuer", "mailer", "redeemer")
	if !strings.Contains(out.String(), "sync_interval always") {
		t.Errorf("no word of the server's sync:\n%s", out.String())
	}
	// What the server handled, from its monitoring endpoint: each action
	// is one message on ACTIONS and each redemption one on SCOPES, stored
	// before the answers the report waits for.
	for _, re := range []string{
		`nats-server per emailed link: \d+\.\d messages in, \d+\.\d out; \d+\.\d\d stored \(ACTIONS 1\.00, .*MAIL \d\.\d\d, .*\)`,
		`nats-server per redemption: \d+\.\d messages in, \d+\.\d out; \d+\.\d\d stored \(.*SCOPES 1\.00\)`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("the report lacks %q:\n%s", re, out.String())
		}
	}
}

// TestLoadSESReports: the production shape with the mailer on the SES
// driver against aws-ses-v2-local, whose own ceiling the run measures; the
// emulator's account reports -ses-rate, which sizes the mailer's pace and
// emails in flight (pace.Concurrency: 100/s × 0.5 s + 4).
func TestLoadSESReports(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts five processes")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("aws-ses-v2-local needs node")
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"load", "-shape", "processes", "-mail", "ses", "-actions", "12", "-concurrency", "3",
		"-redeem", "6", "-redeem-rate", "50", "-redeem-concurrency", "2", "-ses-rate", "100"}, env(nil), &out); err != nil {
		t.Fatalf("load: %v\n%s", err, out.String())
	}
	if want := "SES account: MaxSendRate 100/s; the mailer paces by the account's rate of 100/s (less its headroom), with 54 emails in flight\n"; !strings.Contains(out.String(), want) {
		t.Errorf("the report lacks %q:\n%s", want, out.String())
	}
	loadReport(t, out.String(), 12, "nats-server", "aws-ses-v2-local", "issuer", "mailer", "redeemer")
	for _, re := range []string{`aws-ses-v2-local alone: 12 SendEmail from 8 senders: \d+/s; failed 0`, `the pipeline's \d+ emails/s are \d+ % of the emulator's best`} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("the report lacks %q:\n%s", re, out.String())
		}
	}
}

func TestLoadRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-shape", "cloud"}, {"-sync", "sometimes"}, {"-actions", "0"}, {"-redeem-rate", "0"}, {"-mail", "smtp"}, {"-mail", "ses"}, {"-ses-rate", "-1"}, {"-ses-rate", "NaN"},
		{"-shape", "processes", "-mail", "ses", "-ses-rate", "+Inf"}, {"-ses-rate", "100"}} {
		err := run(t.Context(), append([]string{"load"}, args...), env(nil), io.Discard)
		if !errors.Is(err, worker.ErrConfig) {
			t.Errorf("load %v: %v, want a bad configuration", args, err)
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestProcCPUReadsThisProcess(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for after := before; after <= before; after, _ = procCPU(os.Getpid()) {
		for i := range 1 << 20 {
			_ = strconv.Itoa(i)
		}
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}

// BenchmarkEmailsEndToEnd guards the whole path on a real (embedded)
// nats-server: b.N sign-ins published by 64 closed-loop publishers until
// every sent event, reporting emails/s and the CPU per emailed link of this
// process (issuer, mailer with the sink, redeemer, server and publishers
// together). Run it with -benchtime <n>x; `linkpipe load -shape processes`
// measures the production shape.
func BenchmarkEmailsEndToEnd(b *testing.B) {
	r := embeddedRun(b, strconv.FormatInt(time.Now().UnixNano(), 36))
	cpu0, _ := procCPU(os.Getpid())
	b.ResetTimer()
	if err := r.emails(b.Context(), b.N, 64, 5*time.Minute); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu1, _ := procCPU(os.Getpid())
	b.ReportMetric(r.emailsPerSec, "emails/s")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/link")
}

// storedPerLink is what JetStream stores for one emailed sign-in link: the
// action, its event-id claim, the scope's state, the address on record and
// the client's current address, the issued and sent events, the mail
// command with its delivery claim and mail.done, and the SES (here the
// sink's) message id. Each stored message is a write and an ack on every
// link, and an fsync with sync_interval: always (docs/performance.md): a
// change that stores one more per link changes this table on purpose.
var storedPerLink = map[string]uint64{
	bus.StreamActions: 1, "KV_" + bus.BucketEventClaims: 1, bus.StreamScopes: 1, "KV_" + bus.BucketRecipients: 2,
	bus.StreamLinks: 2, bus.StreamMail: 3, "KV_" + bus.BucketMessages: 1,
}

// TestStoredMessagesPerEmailedLink guards the per-link work of the whole
// pipeline without a clock: n sign-ins through the all-in-one stack store
// exactly storedPerLink on each stream, and nothing anywhere else.
func TestStoredMessagesPerEmailedLink(t *testing.T) {
	r := embeddedRun(t, "stored")
	js := r.js
	stored := func() map[string]uint64 {
		out := map[string]uint64{}
		for info := range js.ListStreams(t.Context()).Info() {
			out[info.Config.Name] = info.State.LastSeq
		}
		return out
	}
	// The stack stores its demo practice as it starts.
	eventually.True(t, 10*time.Second, func() bool { return stored()["KV_"+bus.BucketPractices] > 0 }, "the demo practice stored")
	before := stored()
	const n = 20
	if err := r.emails(t.Context(), n, 4, time.Minute); err != nil {
		t.Fatal(err)
	}
	diff := func() map[string]uint64 {
		out := map[string]uint64{}
		for name, seq := range stored() {
			if d := seq - before[name]; d > 0 {
				out[name] = d
			}
		}
		return out
	}
	want := map[string]uint64{}
	for name, per := range storedPerLink {
		want[name] = per * n
	}
	// The message id is recorded just after the sent event the run waits for.
	deadline := time.Now().Add(10 * time.Second)
	for !maps.Equal(diff(), want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more arrives late
	if got := diff(); !maps.Equal(got, want) {
		t.Errorf("stored for %d emailed links: %v, want %v", n, got, want)
	}
}

// embeddedRun is a load run named run against an all-in-one stack in a
// temporary directory, closed with tb.
func embeddedRun(tb testing.TB, run string) *loadRun {
	tb.Helper()
	st, err := embeddedStack(tb.Context(), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.close)
	nc, err := nats.Connect(st.natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return &loadRun{st: st, nc: nc, js: js, out: io.Discard, run: run}
}
