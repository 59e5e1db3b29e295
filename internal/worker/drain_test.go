package worker_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/worker"
)

func status(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// When Run's ctx ends, /readyz answers 503 while the worker still
// drains, the worker's ctx carries LINKPIPE_SHUTDOWN_TIMEOUT, and the
// public server keeps serving through the drain, then closes.
func TestRunDrainsNotReadyFirst(t *testing.T) {
	srv := bustest.Start(t)
	vals := values(srv.URL, t.TempDir())
	vals[config.ShutdownTimeout.Env] = "2s"
	vals[config.HTTPAddr.Env] = "127.0.0.1:0"
	p, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	adm, err := p.Serve(config.AdminAddr, p.AdminMux())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := p.ServeServer(config.HTTPAddr, &http.Server{Handler: p.AdminMux()})
	if err != nil {
		t.Fatal(err)
	}
	if c := status(adm.Addr(), "/readyz"); c != 200 {
		t.Fatalf("/readyz before stopping: %d", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	draining := make(chan time.Duration, 1)
	finish := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			draining <- bus.ShutdownTimeout(ctx)
			<-finish // work in flight
			return nil
		})
	}()
	cancel()
	if d := <-draining; d != 2*time.Second {
		t.Errorf("the worker's shutdown timeout is %v, want 2s", d)
	}
	for _, a := range []string{adm.Addr(), pub.Addr()} {
		if c := status(a, "/readyz"); c != http.StatusServiceUnavailable {
			t.Errorf("%s/readyz while draining: %d, want 503", a, c)
		}
		if c := status(a, "/healthz"); c != 200 {
			t.Errorf("%s/healthz while draining: %d, want 200 (alive)", a, c)
		}
	}
	close(finish)
	// The public server serves through the readiness grace, then closes.
	eventually.True(t, 10*time.Second, func() bool { return status(pub.Addr(), "/healthz") == 0 }, "the public server to close")
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if c := status(adm.Addr(), "/readyz"); c != http.StatusServiceUnavailable {
		t.Errorf("admin /readyz after the drain: %d, want 503 until Close", c)
	}
}
