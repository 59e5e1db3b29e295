// Package eventually waits in tests for something that happens
// asynchronously (a consumer catching up, an email arriving, an event being
// published): it polls a condition until it holds or a timeout passes.
package eventually

import (
	"fmt"
	"testing"
	"time"
)

// Polling starts at firstPoll and doubles up to maxPoll, so that a condition
// that holds at once is seen at once and a slow one is not polled in a busy
// loop.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 50 * time.Millisecond
)

// True polls cond until it returns true, and fails the test with t.Fatalf
// if it still returns false once timeout has passed. cond is called at least
// once. msgAndArgs say what is awaited, for the failure message: a string, or
// a format and its arguments ("link %s on node %d", id, i). The failure is
// reported at the caller's line (True calls t.Helper).
//
// cond runs on the caller's goroutine, so it may itself call t.Fatal.
func True(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	poll := firstPoll
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what(msgAndArgs))
		}
		time.Sleep(poll)
		poll = min(2*poll, maxPoll)
	}
}

// what renders msgAndArgs.
func what(msgAndArgs []any) string {
	switch {
	case len(msgAndArgs) == 0:
		return "the condition"
	case len(msgAndArgs) == 1:
		return fmt.Sprint(msgAndArgs[0])
	}
	if format, ok := msgAndArgs[0].(string); ok {
		return fmt.Sprintf(format, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs...)
}
