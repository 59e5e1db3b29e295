package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
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
	// DefaultShutdownTimeout is LINKPIPE_SHUTDOWN_TIMEOUT's default.
	DefaultShutdownTimeout = 20 * time.Second
	// MaxReadinessGrace bounds how long a stopping process keeps serving
	// its public address after /readyz turned 503, so that load balancers
	// stop sending before it closes (a quarter of the shutdown timeout
	// when that is shorter).
	MaxReadinessGrace = 5 * time.Second
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

// NewLogger is the JSON logger of a worker process, writing to w the
// lines at level and above, with the worker's name under KeyWorker.
func NewLogger(w io.Writer, name string, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With(KeyWorker, name)
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
	// LINKPIPE_REPLICAS, LINKPIPE_LOG_LEVEL and LINKPIPE_DATA_DIR from them.
	Values config.Values
	// Log is the untagged logger the process's loggers derive from; nil
	// means JSON to LogOutput at LINKPIPE_LOG_LEVEL (info if unset).
	Log       *slog.Logger
	LogOutput io.Writer
	// Clock defaults to clock.Real{}.
	Clock clock.Clock
	// StartupTimeout defaults to StartupTimeout.
	StartupTimeout time.Duration
	// BacklogInterval is how often the backlog metrics are read (default
	// bus.DefaultBacklogInterval).
	BacklogInterval time.Duration
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
	// Backlog exports the backlog of the consumers the process's workers
	// use (each New* in compose.go watches its own) and the dead-letter
	// depth on Metrics, read on an interval until Close.
	Backlog *bus.ConsumerMetrics

	base  *slog.Logger
	clock clock.Clock

	// shutdownTimeout is LINKPIPE_SHUTDOWN_TIMEOUT; stopping is set when
	// Run's ctx ends (SIGTERM), at stopAt; public are the servers Run
	// drains (ServeServer).
	shutdownTimeout time.Duration
	stopping        atomic.Bool
	stopAt          atomic.Int64
	public          []*admin.Server

	mu      sync.Mutex
	closers []func()
}

// Start connects to NATS as linkpipe-<name> with the settings of
// config.NATSVars, creates the streams, consumers and buckets that are
// missing and logs how existing ones differ (bus.Ensure; waiting for the
// server up to the start-up deadline), and loads the practice
// directory, which stays current until ctx ends or Close.
func Start(ctx context.Context, s Settings) (_ *Process, err error) {
	level, err := config.ParseLogLevel(s.Values.Get(config.LogLevel))
	if err != nil {
		return nil, BadConfig(fmt.Errorf("%s: %s: %w", s.Name, config.LogLevel.Env, err))
	}
	base := s.Log
	if base == nil {
		out := s.LogOutput
		if out == nil {
			out = io.Discard
		}
		base = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))
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
	shutdown := DefaultShutdownTimeout
	if v := s.Values.Get(config.ShutdownTimeout); v != "" {
		if shutdown, err = time.ParseDuration(v); err != nil || shutdown <= 0 {
			return nil, BadConfig(fmt.Errorf("%s: %s: %q is not a positive duration", s.Name, config.ShutdownTimeout.Env, v))
		}
	}
	p := &Process{
		Name: s.Name, Values: s.Values, Log: base.With(KeyWorker, s.Name),
		Metrics: admin.NewRegistry(), base: base, clock: s.Clock, shutdownTimeout: shutdown,
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
	p.Backlog, err = bus.NewConsumerMetrics(p.JS, p.Metrics, s.BacklogInterval, p.Log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	bctx, stopBacklog := context.WithCancel(context.WithoutCancel(ctx))
	backlogDone := make(chan struct{})
	go func() {
		defer close(backlogDone)
		p.Backlog.Run(bctx)
	}()
	p.onClose(func() { stopBacklog(); <-backlogDone })
	return p, nil
}

// Deps are what the process shares with the workers it hosts, logging as
// worker.
func (p *Process) Deps(worker string) Deps {
	return Deps{JS: p.JS, NC: p.NC, Practices: p.Practices, Metrics: p.Metrics, Backlog: p.Backlog, Clock: p.clock,
		Ready: p.NotStopping, Log: p.base.With(KeyWorker, worker)}
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
// NATS and not stopping, and every one of checks passes: a worker's own
// readiness, such as the mailer's while the mail provider refuses every send)
// and /metrics.
func (p *Process) AdminMux(checks ...admin.Ready) *http.ServeMux {
	mux := http.NewServeMux()
	admin.Register(mux, p.Metrics, append([]admin.Ready{admin.NATSReady(p.NC), p.NotStopping}, checks...)...)
	return mux
}

// ErrStopping is NotStopping's answer once the process began to stop.
var ErrStopping = errors.New("stopping: draining the work in flight")

// NotStopping is a readiness check (admin.Ready): ErrStopping from the
// moment Run's ctx ended (SIGTERM) on.
func (p *Process) NotStopping(context.Context) error {
	if p.stopping.Load() {
		return ErrStopping
	}
	return nil
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
	p.mu.Lock()
	p.public = append(p.public, srv)
	p.mu.Unlock()
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
// the process's name. When ctx ends (SIGTERM) the process drains: /readyz
// answers 503 at once (NotStopping), the worker's consume loop stops
// pulling and its work in flight gets LINKPIPE_SHUTDOWN_TIMEOUT to finish
// (bus.WithShutdownTimeout; what is left is handed back), and the servers
// of ServeServer keep serving for a readiness grace (MaxReadinessGrace, or
// a quarter of the timeout) so load balancers take the process out, then
// finish their requests within what is left of the timeout.
func (p *Process) Run(ctx context.Context, run Runner) error {
	stop := context.AfterFunc(ctx, func() {
		p.stopAt.Store(time.Now().UnixNano())
		p.stopping.Store(true)
		p.Log.Info(p.Name+" stopping: not ready, draining", keyTimeout, p.shutdownTimeout.String())
	})
	defer stop()
	err := run(bus.WithShutdownTimeout(ctx, p.shutdownTimeout))
	if p.stopping.Load() {
		p.drainServers()
	}
	p.Log.Info(p.Name+" stopping", KeyErr, err)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	return nil
}

// keyTimeout logs the shutdown timeout.
const keyTimeout = "timeout"

// drainServers shuts the public servers down after the readiness grace,
// letting their requests finish by the shutdown deadline.
func (p *Process) drainServers() {
	p.mu.Lock()
	servers := p.public
	p.mu.Unlock()
	if len(servers) == 0 {
		return
	}
	at := time.Unix(0, p.stopAt.Load())
	deadline := at.Add(p.shutdownTimeout)
	time.Sleep(time.Until(at.Add(min(MaxReadinessGrace, p.shutdownTimeout/4))))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			p.Log.Warn(p.Name+" requests cut at the shutdown timeout", KeyErr, err)
		}
	}
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
