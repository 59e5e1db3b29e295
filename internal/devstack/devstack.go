// Package devstack owns the all-in-one dev mode (`linkpipe dev`): an
// in-process nats-server with JetStream, the issuer, the mailer with the
// local mail sink, and the redeemer in one process behind one HTTP address,
// plus the /dev page where a newcomer publishes a sample sign-in request, the
// /inbox page of the sink, and a demo portal at /portal that verifies the
// ticket it receives. Secrets are generated on first start and kept in the
// data directory, so links survive a restart.
package devstack

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// DemoPractice is the practice the /dev page publishes for.
const DemoPractice = "demo"

// Config configures the dev stack.
type Config struct {
	// DataDir holds JetStream's files, the workers' bbolt files and the
	// generated secrets.
	DataDir string
	// HTTPAddr serves every page (default 127.0.0.1:8080; port 0 picks one).
	HTTPAddr string
	// NATSPort is the embedded server's client port (default 4222; -1 picks
	// one), so `linkpipe publish` and other tools can reach it.
	NATSPort int
	// PublicURL overrides http://<listen address>. Every page answers only
	// requests whose Host is a loopback name or address, or the host of
	// this URL (admin.LocalHostsOnly).
	PublicURL string
	// Sender replaces the local mail sink (tests point it at an SES
	// emulator); nil means the sink and its /inbox page.
	Sender mailer.Sender
	// From is the From address (default linkpipe-dev@localhost.localdomain).
	From string
	// TrustedProxies may set X-Forwarded-For for the redeemer's per-IP
	// limits (linkpipe load sends its clicks as many clients); default none.
	TrustedProxies []netip.Prefix
	Clock          clock.Clock
	Log            *slog.Logger
}

// Stack is a running dev stack.
type Stack struct {
	// URL is the base URL of every page; NATSURL the embedded server's;
	// Addr the address the pages are served on (URL's unless PublicURL).
	URL     string
	NATSURL string
	Addr    string

	keys   *link.Keyring
	srv    *server.Server
	proc   *worker.Process
	http   *admin.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

type secrets struct {
	LinkKey   string `json:"link_key"`
	TicketKey string `json:"ticket_key"`
}

func loadSecrets(dir string) (secrets, error) {
	path := filepath.Join(dir, "dev-secrets.json")
	var s secrets
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &s); err != nil {
			return s, fmt.Errorf("devstack: %s: %w", path, err)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("devstack: %w", err)
	}
	gen := func() string {
		b := make([]byte, 32)
		rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	s = secrets{LinkKey: "dev1:" + gen(), TicketKey: gen()}
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return s, fmt.Errorf("devstack: %w", err)
	}
	return s, nil
}

// Start brings the whole pipeline up. Close stops it.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "./data/dev"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	if cfg.NATSPort == 0 {
		cfg.NATSPort = 4222
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: data dir: %w", err)
	}
	sec, err := loadSecrets(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	keys, err := link.ParseKeyring(sec.LinkKey)
	if err != nil {
		return nil, fmt.Errorf("devstack: link key: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(sec.TicketKey)
	if err != nil {
		return nil, fmt.Errorf("devstack: ticket key: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("devstack: listen %s: %w", cfg.HTTPAddr, err)
	}
	base := cfg.PublicURL
	if base == "" {
		base = "http://" + ln.Addr().String()
	}
	st = &Stack{URL: base, Addr: ln.Addr().String(), keys: keys}
	defer func() {
		if err != nil {
			ln.Close()
			st.Close()
		}
	}()

	st.srv, err = bus.StartEmbedded(bus.EmbeddedOptions{Dir: filepath.Join(cfg.DataDir, "nats"), Port: cfg.NATSPort})
	if err != nil {
		return st, err
	}
	st.NATSURL = st.srv.ClientURL()
	// One process hosting the three workers, wired as their own binaries
	// wire them.
	st.proc, err = worker.Start(ctx, worker.Settings{Name: "dev", Log: cfg.Log, Clock: cfg.Clock, Values: config.Values{
		config.NATSURL.Env: st.NATSURL, config.DataDir.Env: cfg.DataDir, config.Replicas.Env: "1",
	}})
	if err != nil {
		return st, err
	}

	issuerDB, err := st.proc.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		return st, err
	}
	iss, err := worker.NewIssuer(st.proc.Deps("issuer"), issuerDB, keys)
	if err != nil {
		return st, err
	}
	mailerDB, err := st.proc.OpenStore("mailer", mailer.SinkBucket)
	if err != nil {
		return st, err
	}
	sink, err := mailer.NewSink(mailerDB, cfg.Clock)
	if err != nil {
		return st, err
	}
	var sender mailer.Sender = sink
	concurrency := mailer.SinkConcurrency
	if cfg.Sender != nil {
		sender, concurrency = cfg.Sender, 0
	}
	if cfg.From == "" {
		cfg.From = "linkpipe-dev@localhost.localdomain"
	}
	ml, err := worker.NewMailer(st.proc.Deps("mailer"), worker.MailerSettings{
		Keys: keys, Sender: sender, From: cfg.From, PublicURL: base, Concurrency: concurrency,
	})
	if err != nil {
		return st, err
	}
	rd, signer, err := worker.NewRedeemer(st.proc.Deps("redeemer"), worker.RedeemerSettings{
		Seeds: [][]byte{seed}, PublicURL: base, PortalURL: base + "/portal", TrustedProxies: cfg.TrustedProxies,
	})
	if err != nil {
		return st, err
	}
	pj, err := worker.NewProjector(st.proc.Deps("projector"))
	if err != nil {
		return st, err
	}

	runners := map[string]worker.Runner{"issuer": iss.Run, "mailer": ml.Run, "projector": pj.Run}
	// With the sink, SES's delivery events come from the scenario panel
	// through a local queue, to the same consumer production runs.
	var fq *feedbackQueue
	if cfg.Sender == nil {
		fq = newFeedbackQueue()
		fc, err := worker.NewFeedback(st.proc.Deps("feedback"), worker.FeedbackSettings{
			Queue: fq, QueueURL: feedbackQueueURL, RetryDelay: time.Second})
		if err != nil {
			return st, err
		}
		runners["feedback"] = fc.Run
	}

	runCtx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	for name, run := range runners {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			if err := run(runCtx); err != nil && runCtx.Err() == nil {
				cfg.Log.Error("worker stopped", worker.KeyWorker, name, worker.KeyErr, err)
				st.errMu.Lock()
				st.err = fmt.Errorf("devstack: %s: %w", name, err)
				st.errMu.Unlock()
			}
		}()
	}

	// The demo practice's settings go through the issuer like any other.
	if _, err := events.Publish(ctx, st.proc.JS, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: fmt.Sprintf("dev-practice-%x", sha256.Sum256([]byte(base)))[:25], PracticeID: DemoPractice},
		Practice: events.Practice{Name: "Demo Practice", ReplyTo: "front-desk@demo.example", PortalURL: base + "/portal"},
	}); err != nil {
		return st, err
	}

	cat, err := locale.New()
	if err != nil {
		return st, fmt.Errorf("devstack: %w", err)
	}
	mux := http.NewServeMux()
	dev := &devPages{js: st.proc.JS, cat: cat, base: base, jwks: signer.JWKS(), clock: cfg.Clock, log: cfg.Log,
		practices: st.proc.Deps("dev").Practices, scenarios: scenarios()}
	if cfg.Sender == nil {
		dev.sink, dev.feedback = sink, fq
	}
	dev.register(mux)
	worker.MountInbox(mux, sink)
	mux.Handle("GET /metrics", st.proc.AdminMux()) // one address in dev mode
	worker.MountSupport(mux, st.proc.Deps("support"))
	mux.Handle("/", rd.Handler())
	// The inbox shows live links: only for requests addressed to this
	// machine (or the public host the operator set), never to a name that
	// DNS rebinding pointed here.
	st.http = admin.Serve(ln, admin.LocalHostsOnly(mux, admin.HostOf(base)))
	return st, nil
}

// Err reports a worker that stopped on its own.
func (s *Stack) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Keys returns the link keyring (the load command mints tokens with it).
func (s *Stack) Keys() *link.Keyring { return s.keys }

// JetStream returns the stack's JetStream client.
func (s *Stack) JetStream() jetstream.JetStream { return s.proc.JS }

// Close stops the HTTP server, the workers, their process (stores, practice
// directory, the flushed NATS connection) and the embedded server.
func (s *Stack) Close() error {
	if s.http != nil {
		s.http.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.proc != nil {
		s.proc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	return nil
}
