package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/linkpipe/linkpipe/internal/worker"
)

func TestProbe(t *testing.T) {
	var notReady atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if notReady.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	noenv := func(string) string { return "" }
	if err := run(context.Background(), []string{"probe", srv.URL + "/readyz"}, noenv, io.Discard); err != nil {
		t.Errorf("ready: %v", err)
	}
	notReady.Store(true)
	if err := run(context.Background(), []string{"probe", srv.URL + "/readyz"}, noenv, io.Discard); worker.ExitCode(err) != 1 {
		t.Errorf("503: %v (exit %d), want exit 1", err, worker.ExitCode(err))
	}
	srv.Close()
	if err := run(context.Background(), []string{"probe", srv.URL}, noenv, io.Discard); worker.ExitCode(err) != 1 {
		t.Errorf("closed: %v, want exit 1", err)
	}
	for _, args := range [][]string{{"probe"}, {"probe", "ftp://x"}, {"probe", "a", "b"}} {
		if err := run(context.Background(), args, noenv, io.Discard); worker.ExitCode(err) != 2 {
			t.Errorf("%v: %v, want exit 2", args, err)
		}
	}
}
