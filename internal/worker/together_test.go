package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/worker"
)

// Together runs its runners until ctx ends; the first failure stops the
// others and is returned after all have returned.
func TestTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{}, 8)
	wait := func(ctx context.Context) error { <-ctx.Done(); stopped <- struct{}{}; return nil }
	done := make(chan error, 1)
	go func() { done <- worker.Together(wait, wait)(ctx) }()
	cancel()
	if err := <-done; err != nil || len(stopped) != 2 {
		t.Fatalf("after cancel: %v, %d stopped", err, len(stopped))
	}
	boom := errors.New("boom")
	fail := func(context.Context) error { time.Sleep(10 * time.Millisecond); return boom }
	if err := worker.Together(wait, fail)(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("a failing runner: %v", err)
	}
}
