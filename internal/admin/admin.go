// Package admin owns the operational HTTP endpoints every worker serves:
// /healthz (the process is alive), /readyz (it is connected to NATS and its
// own checks pass) and /metrics (Prometheus, names prefixed linkpipe_).
package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry with the Go and process
// collectors, for one worker's metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Ready reports whether the worker can do its job; nil means ready.
type Ready func(ctx context.Context) error

// NATSReady is ready while nc is connected.
func NATSReady(nc *nats.Conn) Ready {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
		return nil
	}
}

// Register adds /healthz, /readyz and /metrics to mux.
func Register(mux *http.ServeMux, reg *prometheus.Registry, ready ...Ready) {
	RegisterHealth(mux, ready...)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// RegisterHealth adds /healthz and /readyz (not /metrics) to mux.
func RegisterHealth(mux *http.ServeMux, ready ...Ready) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for _, check := range ready {
			if err := check(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
}

// Server is a running HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen starts serving h on addr (":0" picks a port; see Addr).
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	return Serve(ln, h), nil
}

// Serve starts serving h on an open listener.
func Serve(ln net.Listener, h http.Handler) *Server {
	return ServeServer(ln, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second})
}

// ServeServer starts serving srv (its handler, timeouts and limits as the
// caller set them) on an open listener.
func ServeServer(ln net.Listener, srv *http.Server) *Server {
	s := &Server{ln: ln, srv: srv}
	// Serve returns ErrServerClosed after Close; any other error means the
	// listener broke, and the process's readiness checks will show it.
	go func() { _ = s.srv.Serve(ln) }()
	return s
}

// Addr is the address actually listened on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting connections and waits for the requests in
// flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close shuts the server down, waiting up to 5s for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
