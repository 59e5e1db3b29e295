package eventually_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/eventually"
)

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	eventually.True(t, time.Second, func() bool { calls++; return calls == 3 }, "the third call")
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

// fatalTB records Fatalf and stops its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestTrueFailsAfterTheTimeout(t *testing.T) {
	for _, tc := range []struct {
		msgAndArgs []any
		want       string
	}{
		{nil, "timed out after 20ms waiting for the condition"},
		{[]any{"the email"}, "timed out after 20ms waiting for the email"},
		{[]any{"link %s on node %d", "l-1", 2}, "timed out after 20ms waiting for link l-1 on node 2"},
	} {
		f := &fatalTB{TB: t}
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			eventually.True(f, 20*time.Millisecond, func() bool { return false }, tc.msgAndArgs...)
		}()
		<-done
		if f.msg != tc.want {
			t.Errorf("failure message %q, want %q", f.msg, tc.want)
		}
		if d := time.Since(start); d < 20*time.Millisecond {
			t.Errorf("gave up after %s, before the 20ms timeout", d)
		}
	}
}
