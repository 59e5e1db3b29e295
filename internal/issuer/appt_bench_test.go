package issuer_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
)

// BenchmarkAppointmentScheduled pre-publishes b.N telehealth scheduled
// actions (distinct appointments, default reminders) and measures how fast
// one Issuer (default concurrency) handles them. Each is an owner lookup
// (SCOPES subjects), a scope read and conditional write, an issued event, a
// mail command, a schedule listing, two schedule publishes, two scope
// re-reads, a ledger write and an ack.
func BenchmarkAppointmentScheduled(b *testing.B) {
	e := newEnv(b)
	e.clk.Set(tA)
	measureThroughput(b, e, e.iss, func(i int) events.Action {
		n := strconv.Itoa(i)
		return scheduled("evt-bench-"+n, "client-"+n, "appt-"+n, tA.Add(96*time.Hour), true, nil)
	})
}
