package worker_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// TestLogLevelKeepsPerLinkLinesAtDebug (issue #11: "the issuer and mailer
// log one INFO line per link with no way to lower the level"): an issuer
// and a mailer at LINKPIPE_LOG_LEVEL=info work through n sign-ins without
// a line per link; at debug each link has its lines.
func TestLogLevelKeepsPerLinkLinesAtDebug(t *testing.T) {
	for _, c := range []struct {
		level   string
		perLink bool
	}{{"info", false}, {"", false}, {"debug", true}} {
		t.Run("level="+c.level, func(t *testing.T) {
			const n = 20
			issLog, mailLog := runPipeline(t, c.level, n)
			for i := range n {
				id := fmt.Sprintf("ll-%d", i)
				got := strings.Contains(issLog, id)
				if got != c.perLink {
					t.Errorf("issuer log at %q mentions %s: %v, want %v\n%s", c.level, id, got, c.perLink, issLog)
				}
			}
			for _, msg := range []string{`"msg":"link issued"`, `"msg":"mail sent"`} {
				log := issLog
				if strings.Contains(msg, "mail") {
					log = mailLog
				}
				if got := strings.Count(log, msg); (got == n) != c.perLink || (!c.perLink && got != 0) {
					t.Errorf("at %q: %d lines %s, per-link lines wanted: %v", c.level, got, msg, c.perLink)
				}
			}
			if !strings.Contains(issLog, `"msg":"issuer ready"`) && !strings.Contains(issLog, `"msg":"bus: consuming"`) {
				t.Errorf("at %q the issuer logged no start-up line:\n%s", c.level, issLog)
			}
		})
	}
}

// TestBadLogLevelIsABadSetting: LINKPIPE_LOG_LEVEL other than the four
// levels stops every worker with exit status 2, naming the setting.
func TestBadLogLevelIsABadSetting(t *testing.T) {
	for _, vars := range [][]config.Var{config.IssuerVars(), config.MailerVars(), config.RedeemerVars()} {
		env := map[string]string{"LINKPIPE_LOG_LEVEL": "verbose", "LINKPIPE_LINK_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32)),
			"LINKPIPE_PORTAL_URL": "https://portal.example", "LINKPIPE_TICKET_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32))}
		_, err := worker.Parse("w", nil, getenv(env), nil, vars...)
		if worker.ExitCode(err) != worker.ExitConfig || !strings.Contains(err.Error(), "LINKPIPE_LOG_LEVEL") {
			t.Errorf("LINKPIPE_LOG_LEVEL=verbose: %v (exit %d), want exit 2 naming it", err, worker.ExitCode(err))
		}
	}
	srv := bustest.Start(t)
	vals := values(srv.URL, t.TempDir())
	vals[config.LogLevel.Env] = "loud"
	if _, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: vals}); worker.ExitCode(err) != worker.ExitConfig ||
		!strings.Contains(err.Error(), "LINKPIPE_LOG_LEVEL") {
		t.Errorf("Start with LINKPIPE_LOG_LEVEL=loud: %v, want a bad setting", err)
	}
}

// runPipeline runs an issuer and a sink mailer, each in its own Process at
// level, through n sign-ins, and returns their logs.
func runPipeline(t *testing.T, level string, n int) (issuerLog, mailerLog string) {
	srv := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	keys, err := link.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	start := func(name string, logs *syncbuf.Buffer) *worker.Process {
		vals := values(srv.URL, t.TempDir())
		vals[config.LogLevel.Env] = level
		p, err := worker.Start(ctx, worker.Settings{Name: name, Values: vals, LogOutput: logs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	run := func(r worker.Runner) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r(runCtx) }()
	}
	var il, ml syncbuf.Buffer
	ip := start("issuer", &il)
	db, err := ip.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := worker.NewIssuer(ip.Deps("issuer"), db, keys)
	if err != nil {
		t.Fatal(err)
	}
	run(iss.Run)
	mp := start("mailer", &ml)
	mdb, err := mp.OpenStore("mailer", mailer.SinkBucket)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := mailer.NewSink(mdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := worker.NewMailer(mp.Deps("mailer"), worker.MailerSettings{Keys: keys, Sender: sink,
		From: "links@acme.example", PublicURL: "https://links.example"})
	if err != nil {
		t.Fatal(err)
	}
	run(m.Run)

	_, js := srv.Connect(t)
	if _, err := events.Publish(ctx, js, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "ll-practice", PracticeID: "acme"},
		Practice: events.Practice{Name: "Acme Health", ReplyTo: "desk@acme.example", PortalURL: "https://portal.acme.example"},
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := events.Publish(ctx, js, &events.SigninRequested{
			Envelope: events.Envelope{EventID: fmt.Sprintf("ll-%d", i), PracticeID: "acme"},
			Client:   events.Client{ID: fmt.Sprintf("client-%d", i), Email: fmt.Sprintf("c%d@example.com", i)},
		}); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 45*time.Second, func() bool {
		msgs, err := sink.Messages(0)
		return err == nil && len(msgs) == n
	}, "every email in the sink")
	// A handler logs before its message is acked: once both consumers
	// have nothing pending or unacked, every line is written.
	for _, c := range [][2]string{{bus.StreamActions, bus.ConsumerIssuer}, {bus.StreamMail, bus.ConsumerMailer}} {
		eventually.True(t, 45*time.Second, func() bool {
			cons, err := js.Consumer(ctx, c[0], c[1])
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		}, "consumer "+c[1]+" done")
	}
	return il.String(), ml.String()
}
