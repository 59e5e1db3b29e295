package redeemer_test

import (
	"bufio"
	"context"
	"html"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/redeemer"
)

const renewedText = "If this link is on record, we've emailed a new one"

// renew POSTs a renewal and checks the one answer every renewal gets.
func renew(t testing.TB, s *server, tok string) answer {
	t.Helper()
	a := do(t, noRedirect(nil), "POST", s.URL+"/l/"+tok+"/renew")
	if a.status != http.StatusOK || !strings.Contains(html.UnescapeString(a.body), renewedText) {
		t.Fatalf("renew: %d\n%s", a.status, a.body)
	}
	return a
}

// renewals counts the renewal requests the redeemers published.
func (e *env) renewals() int {
	e.t.Helper()
	return len(e.renewalRequests())
}

// metric sums a counter's samples whose labels contain sel across servers.
func metric(t testing.TB, name, sel string, servers ...*server) float64 {
	t.Helper()
	var sum float64
	for _, s := range servers {
		a := do(t, noRedirect(nil), "GET", s.admin.URL+"/metrics")
		sc := bufio.NewScanner(strings.NewReader(a.body))
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, sel) {
				continue
			}
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			sum += v
		}
	}
	return sum
}

// TestRenewalStorm: 100 concurrent renewal requests for one client, with
// every kind of that client's links, on two replicas: exactly the client's
// limit (5) of renewals is sent, every answer is the same 200 page, and
// once the window has passed renewals are allowed again.
func TestRenewalStorm(t *testing.T) {
	e := newEnv(t)
	// The per-IP limit (every request here comes from 127.0.0.1) is lifted
	// so that the per-client limit, shared by the replicas, is what holds.
	noIPLimit := func(c *redeemer.Config) { c.RenewIPBurst = 1000 }
	a, b := e.start(noIPLimit), e.start(noIPLimit)
	const client = "c-storm"
	start := t0.Add(48 * time.Hour)
	oldSignin, _ := e.issue(spec{EventID: "ev-st-1", Client: client, ReturnTo: "/bills"})
	signin, _ := e.issue(spec{EventID: "ev-st-2", Client: client})
	e.ticketOf(t, a, do(t, noRedirect(nil), "POST", a.URL+"/l/"+signin), e.portal.URL+"/portal") // used
	doc, _ := e.issue(spec{EventID: "ev-st-3", Client: client, Purpose: events.PurposeDocument, DocumentID: "d-1", ShareID: "sh-1"})
	tele, _ := e.issue(spec{EventID: "ev-st-4", Client: client, Purpose: events.PurposeTelehealth, AppointmentID: "ap-1",
		StartsAt: start, EndsAt: start.Add(time.Hour)})
	tokens := []string{oldSignin, signin, doc, tele}

	storm := func(n int) []answer {
		t.Helper()
		answers := make([]answer, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			srv := a
			if i%2 == 1 {
				srv = b
			}
			tok := tokens[(i/2)%len(tokens)]
			wg.Go(func() {
				<-gate
				answers[i], errs[i] = doE(noRedirect(nil), "POST", srv.URL+"/l/"+tok+"/renew")
			})
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("renew %d: %v", i, err)
			}
			if answers[i].status != http.StatusOK || answers[i].body != answers[0].body || !strings.Contains(html.UnescapeString(answers[i].body), renewedText) {
				t.Fatalf("renew %d: %d, body differs from the first answer:\n%s\n---\n%s", i, answers[i].status, answers[i].body, answers[0].body)
			}
		}
		return answers
	}

	first := storm(100)
	if n := e.renewals(); n != 5 {
		t.Fatalf("%d renewals sent or queued, want the client's limit of 5", n)
	}
	if sent, limited, failed := metric(t, "linkpipe_redeemer_renewals_total", `result="requested"`, a, b),
		metric(t, "linkpipe_redeemer_renewals_total", `result="client_limited"`, a, b),
		metric(t, "linkpipe_redeemer_renewals_total", `result="failed"`, a, b); sent != 5 || limited != 95 || failed != 0 {
		t.Fatalf("renewal results: %v sent, %v limited, %v failed; want 5, 95, 0", sent, limited, failed)
	}
	ids := map[string]bool{}
	for _, tok := range tokens {
		ids[linkIDOf(t, tok)] = true
	}
	for _, rr := range e.renewalRequests() { // each names one of the client's links
		if !ids[rr.LinkID] || rr.PracticeID != practiceAcme {
			t.Fatalf("renewal request %+v", rr)
		}
	}
	// Another client of the same practice is not limited by this one.
	other, _ := e.issue(spec{EventID: "ev-st-other", Client: "c-bystander"})
	renew(t, a, other)
	if n := e.renewals(); n != 6 {
		t.Fatalf("another client's renewal: %d renewals, want 6", n)
	}

	// The window: the RENEWALS stream forgets a renewal after MaxAge (15
	// minutes of real time in production). Shrink it to 2s, wait for the
	// client's renewals to age out, and restore it so that the next burst
	// falls in one window however slow the machine is.
	ctx := context.Background()
	if err := bus.Setup(ctx, e.js, bus.Options{RenewalWindow: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	subj := bus.RenewalPrefix + practiceAcme + "." + client
	eventually.True(t, 15*time.Second, func() bool { return e.count(bus.StreamRenewals, subj) == 0 }, "the renewal window to pass")
	if err := bus.Setup(ctx, e.js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	second := storm(20)
	if second[0].body != first[0].body {
		t.Fatal("the answer changed after the window")
	}
	if n := e.renewals(); n != 6+5 {
		t.Fatalf("after the window: %d renewals, want 11 (5 more)", n)
	}
	if n := e.count(bus.StreamRenewals, subj); n != 5 {
		t.Fatalf("RENEWALS holds %d renewals of the client, want 5", n)
	}
}
