package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/store"
)

// Bounds every worker process shares.
const (
	// StartupTimeout bounds how long a process waits at start for NATS to
	// answer and its streams to be set up (workers may start before the
	// server).
	StartupTimeout = time.Minute
	// FlushTimeout bounds the flush of the NATS connection on exit, which
	// lets the acks and publishes of the last messages reach the server.
	FlushTimeout = 5 * time.Second
)

// Log keys. KeyAdmin and KeyHTTP also label the address in Ready's line.
const (
	KeyWorker  = "worker"
	KeyErr     = "err"
	KeyNATSURL = "nats_url"
	KeyAdmin   = "admin"
	KeyHTTP    = "http"
)

// ClientName is the NATS client name of a linkpipe process: linkpipe-<name>.
func ClientName(name string) string { return "linkpipe-" + name }

// NewLogger is the JSON logger of a worker process, writing to w with the
// worker's name under KeyWorker.
func NewLogger(w io.Writer, name string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, nil)).With(KeyWorker, name)
}

// InboxPrefix is the prefix of the reply subjects of worker name's NATS
// connection: _INBOX_<name>. The least-privilege server configuration
// (docs/nats/least-privilege.conf) lets each role subscribe to its own
// prefix only, so no role reads another's replies.
func InboxPrefix(name string) string { return "_INBOX_" + name }

// ConnectOptions are the NATS connection options of process name from
// the settings of config.NATSVars (the client name is ClientName(name),
// replies come to InboxPrefix(name)). An nkey seed file that does not
// hold a seed, a TLS certificate without its key, or both a .creds file
// and an nkey are errors naming the settings.
func ConnectOptions(vals config.Values, name string) (bus.ConnectOptions, error) {
	o := bus.ConnectOptions{
		URL: vals.Get(config.NATSURL), Name: ClientName(name), InboxPrefix: InboxPrefix(name),
		Creds: vals.Get(config.NATSCreds), NKeySeedFile: vals.Get(config.NATSNKey),
		TLSCA: vals.Get(config.NATSTLSCA), TLSCert: vals.Get(config.NATSTLSCert), TLSKey: vals.Get(config.NATSTLSKey),
	}
	switch {
	case o.Creds != "" && o.NKeySeedFile != "":
		return o, fmt.Errorf("%s and %s are exclusive: give one", config.NATSCreds.Env, config.NATSNKey.Env)
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return o, fmt.Errorf("%s and %s go together: give both or neither", config.NATSTLSCert.Env, config.NATSTLSKey.Env)
	}
	if o.NKeySeedFile != "" {
		if _, err := nats.NkeyOptionFromSeed(o.NKeySeedFile); err != nil {
			return o, fmt.Errorf("%s: %w", config.NATSNKey.Env, err)
		}
	}
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return o, fmt.Errorf("%s: %w", config.NATSTLSCA.Env, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("%s: %s holds no PEM certificate", config.NATSTLSCA.Env, o.TLSCA)
		}
	}
	if o.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey); err != nil {
			return o, fmt.Errorf("%s, %s: %w", config.NATSTLSCert.Env, config.NATSTLSKey.Env, err)
		}
	}
	return o, nil
}

// Settings say which process to start.
type Settings struct {
	// Name is the worker's name ("issuer"): its log tag, the NATS client
	// name linkpipe-<Name>, and the error prefix.
	Name string
	// Values are the parsed settings; Start reads config.NATSVars,
	// LINKPIPE_REPLICAS and LINKPIPE_DATA_DIR from them.
	Values config.Values
	// Log is the untagged logger the process's loggers derive from; nil
	// means JSON to LogOutput.
	Log       *slog.Logger
	LogOutput io.Writer
	// Clock defaults to clock.Real{}.
	Clock clock.Clock
	// StartupTimeout defaults to StartupTimeout.
	StartupTimeout time.Duration
}

// Runner is a worker's consume loop or projector: it runs until ctx ends.
type Runner func(ctx context.Context) error

// Process is a running worker process: connected to NATS, its streams set
// up, its practice directory loaded. Open its store and serve its HTTP with
// its methods; Close releases everything in reverse order.
type Process struct {
	Name      string
	Values    config.Values
	Log       *slog.Logger
	NC        *nats.Conn
	JS        jetstream.JetStream
	Practices *practice.Directory
	// Metrics is the process's Prometheus registry, served at /metrics.
	Metrics *prometheus.Registry

	base  *slog.Logger
	clock clock.Clock

	mu      sync.Mutex
	closers []func()
}

// Start connects to NATS as linkpipe-<name> with the settings of
// config.NATSVars, creates the streams, consumers and buckets that are
// missing and logs how existing ones differ (bus.Ensure; waiting for the
// server up to the start-up deadline), and loads the practice
// directory, which stays current until ctx ends or Close.
func Start(ctx context.Context, s Settings) (_ *Process, err error) {
	base := s.Log
	if base == nil {
		out := s.LogOutput
		if out == nil {
			out = io.Discard
		}
		base = slog.New(slog.NewJSONHandler(out, nil))
	}
	if s.Clock == nil {
		s.Clock = clock.Real{}
	}
	if s.StartupTimeout <= 0 {
		s.StartupTimeout = StartupTimeout
	}
	replicas, err := strconv.Atoi(s.Values.Get(config.Replicas))
	if err != nil {
		return nil, BadConfig(fmt.Errorf("%s: %s: %w", s.Name, config.Replicas.Env, err))
	}
	p := &Process{
		Name: s.Name, Values: s.Values, Log: base.With(KeyWorker, s.Name),
		Metrics: admin.NewRegistry(), base: base, clock: s.Clock,
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	co, err := ConnectOptions(s.Values, s.Name)
	if err != nil {
		return nil, BadConfig(fmt.Errorf("%s: %w", s.Name, err))
	}
	co.Log = p.Log
	p.NC, p.JS, err = bus.Connect(co)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	p.onClose(p.flushAndClose)
	setupCtx, cancel := context.WithTimeout(ctx, s.StartupTimeout)
	defer cancel()
	// Create what is missing; an existing stream is left as it is, its
	// differences logged (linkpipe setup updates streams).
	if err := bus.EnsureWhenReady(setupCtx, p.JS, bus.Options{Replicas: replicas}, p.Log); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	// The directory's watch lives as long as ctx, not the deadline.
	p.Practices, err = practice.Open(ctx, p.JS, p.Log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	p.onClose(func() { p.Practices.Close() })
	return p, nil
}

// Deps are what the process shares with the workers it hosts, logging as
// worker.
func (p *Process) Deps(worker string) Deps {
	return Deps{JS: p.JS, NC: p.NC, Practices: p.Practices, Metrics: p.Metrics, Clock: p.clock,
		Log: p.base.With(KeyWorker, worker)}
}

// OpenStore opens the bbolt file <LINKPIPE_DATA_DIR>/<name>.db with its
// buckets, closed by Close.
func (p *Process) OpenStore(name string, buckets ...string) (*bolt.DB, error) {
	db, err := store.Open(p.Values.Get(config.DataDir), name, buckets...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", p.Name, config.DataDir.Env, err)
	}
	p.onClose(func() { db.Close() })
	return db, nil
}

// AdminMux is a mux serving the process's /healthz, /readyz (connected to
// NATS, and every one of checks passes: a worker's own readiness, such as
// the mailer's while the mail provider refuses every send) and /metrics.
func (p *Process) AdminMux(checks ...admin.Ready) *http.ServeMux {
	mux := http.NewServeMux()
	admin.Register(mux, p.Metrics, append([]admin.Ready{admin.NATSReady(p.NC)}, checks...)...)
	return mux
}

// Serve serves h on the address of the setting addr (LINKPIPE_ADMIN_ADDR,
// LINKPIPE_HTTP_ADDR) until Close. An address it cannot listen on is a bad
// configuration naming the setting.
func (p *Process) Serve(addr config.Var, h http.Handler) (*admin.Server, error) {
	srv, err := admin.Listen(p.Values.Get(addr), h)
	if err != nil {
		return nil, BadConfig(fmt.Errorf("%s: %s: %w", p.Name, addr.Env, err))
	}
	p.onClose(func() { srv.Close() })
	return srv, nil
}

// ServeServer is Serve with a configured server (timeouts, limits): it
// serves hs on the address of the setting addr until Close.
func (p *Process) ServeServer(addr config.Var, hs *http.Server) (*admin.Server, error) {
	ln, err := net.Listen("tcp", p.Values.Get(addr))
	if err != nil {
		return nil, BadConfig(fmt.Errorf("%s: %s: %w", p.Name, addr.Env, err))
	}
	srv := admin.ServeServer(ln, hs)
	p.onClose(func() { srv.Close() })
	return srv, nil
}

// Addr is one address a process serves on, for Ready.
type Addr struct{ What, Addr string }

// Ready announces that the process serves on addr: a log line, and
// "<name> ready <what>=<addr>" on stdout, which tests and scripts wait for.
func (p *Process) Ready(stdout io.Writer, what, addr string, attrs ...any) {
	p.ReadyAt(stdout, []Addr{{what, addr}}, attrs...)
}

// ReadyAt is Ready for a process that serves on several addresses:
// "<name> ready <what>=<addr> <what>=<addr>...".
func (p *Process) ReadyAt(stdout io.Writer, addrs []Addr, attrs ...any) {
	line := p.Name + " ready"
	logAttrs := []any{KeyNATSURL, p.NC.ConnectedUrlRedacted()}
	for _, a := range addrs {
		line += " " + a.What + "=" + a.Addr
		logAttrs = append(logAttrs, a.What, a.Addr)
	}
	p.Log.Info(p.Name+" ready", append(logAttrs, attrs...)...)
	fmt.Fprintln(stdout, line)
}

// Run runs the worker until ctx ends and returns its error, prefixed with
// the process's name.
func (p *Process) Run(ctx context.Context, run Runner) error {
	err := run(ctx)
	p.Log.Info(p.Name+" stopping", KeyErr, err)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	return nil
}

// Close releases what the process opened, newest first: servers, stores,
// the practice directory, and last the NATS connection, flushed first
// (within FlushTimeout) so nothing published or acked just before is lost.
// It is safe to call more than once.
func (p *Process) Close() error {
	p.mu.Lock()
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	return nil
}

func (p *Process) onClose(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closers = append(p.closers, f)
}

func (p *Process) flushAndClose() {
	if p.NC.IsConnected() {
		if err := p.NC.FlushTimeout(FlushTimeout); err != nil {
			p.Log.Warn(p.Name+" flush on exit", KeyErr, err)
		}
	}
	p.NC.Close()
}
