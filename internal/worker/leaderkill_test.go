package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// TestKillTheStreamLeaderMidLoad runs the issuer and the redeemer (as
// their binaries wire them) against a 3-node in-process cluster with R3
// streams, publishes sign-in requests at a steady pace while two browsers
// race to redeem every link as soon as it exists, and shuts down the
// server leading SCOPES (where every redemption's compare-and-set lands)
// a third of the way in. Nothing is lost: every action has its link, its
// issued record once and its mail command; and no link is redeemed twice:
// of each link's two racers exactly one lands on the portal, the other is
// told "used".
func TestKillTheStreamLeaderMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster; skipped in -short mode")
	}
	c := bustest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keys, publicURL := startStack(ctx, t, c.URL, "3")
	_, js := c.Connect(t) // the publisher, failing over between nodes
	const n = 150
	client := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	type result struct{ status [2]int }
	results := make([]result, n)
	var wg sync.WaitGroup
	var retries atomic.Int64
	// redeem POSTs the link until it is decided: 303 (won) or 410
	// (refused); 404 (not issued yet), 429, 503 (the cluster electing) and
	// connection errors are retried.
	redeem := func(i, racer int, token string) {
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			req, _ := http.NewRequest(http.MethodPost, publicURL+"/l/"+token, nil)
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", racer, i/250, i%250))
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusSeeOther, http.StatusGone:
					results[i].status[racer] = resp.StatusCode
					return
				}
			}
			retries.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}
	killed := make(chan string, 1)
	begin := time.Now()
	for i := range n {
		eventID, cl := fmt.Sprintf("r3-%03d", i), fmt.Sprintf("c-%03d", i)
		a := &events.SigninRequested{Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
			Client: events.Client{ID: cl, Email: cl + "@example.com", Name: "Pat"}}
		for {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := events.Publish(pctx, js, a)
			pcancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %s: %v", eventID, err)
			}
			retries.Add(1) // the same event id again: deduplicated
		}
		token, err := keys.Mint("k1", events.PurposeSignin, scope.Signin("acme", cl), eventID)
		if err != nil {
			t.Fatal(err)
		}
		for racer := range 2 {
			wg.Go(func() { redeem(i, racer, token) })
		}
		if i == n/3 {
			for _, s := range c.Servers {
				if s.JetStreamIsStreamLeader("$G", bus.StreamScopes) {
					killed <- s.Name()
					s.Shutdown()
					break
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case name := <-killed:
		t.Logf("shut down %s, the SCOPES leader, after %d of %d actions", name, n/3+1, n)
	default:
		t.Fatal("no server led SCOPES")
	}
	wg.Wait()
	elapsed := time.Since(begin)

	won := 0
	for i, r := range results {
		wins, used := 0, 0
		for _, s := range r.status {
			switch s {
			case http.StatusSeeOther:
				wins++
			case http.StatusGone:
				used++
			}
		}
		if wins != 1 || used != 1 {
			t.Errorf("link %d: answers %v, want one 303 and one 410", i, r.status)
		}
		won += wins
	}
	// Nothing lost: every action has one issued record and one mail command.
	_, js2 := c.Connect(t)
	count := func(stream, filter string) (subjects, msgs int) {
		var subs map[string]uint64
		eventually.True(t, 30*time.Second, func() bool {
			var err error
			subs, err = bus.NewReader(js2, stream).Subjects(ctx, filter)
			return err == nil
		}, "the subjects of "+stream)
		for _, k := range subs {
			msgs += int(k)
		}
		return len(subs), msgs
	}
	eventually.True(t, 60*time.Second, func() bool { s, _ := count(bus.StreamMail, bus.MailCommandPrefix+">"); return s == n },
		"a mail command for every action")
	if s, m := count(bus.StreamLinks, "links.*.issued"); s != n || m != n {
		t.Errorf("%d links with %d issued records, want %d and %d", s, m, n, n)
	}
	if s, m := count(bus.StreamMail, bus.MailCommandPrefix+">"); s != n || m != n {
		t.Errorf("%d mail subjects with %d commands, want %d and %d", s, m, n, n)
	}
	t.Logf("%d actions issued and %d links redeemed once each in %v across the leader change (%d retried requests)",
		n, won, elapsed.Round(time.Millisecond), retries.Load())
}

// startStack runs an issuer and a redeemer (with its projector's
// dependencies, not the projector) in one process on the NATS at natsURL,
// as their binaries wire them, until the test ends; it returns the link
// keyring and the redeemer's public URL. The redeemer honours
// X-Forwarded-For from 127.0.0.1, so each test client can have its own
// address and the per-IP limit does not throttle the test.
func startStack(ctx context.Context, t *testing.T, natsURL, replicas string) (*link.Keyring, string) {
	t.Helper()
	vals := config.Values{config.NATSURL.Env: natsURL, config.DataDir.Env: t.TempDir(), config.Replicas.Env: replicas,
		config.AdminAddr.Env: "127.0.0.1:0"}
	p, err := worker.Start(ctx, worker.Settings{Name: "r3", Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	key := bytes.Repeat([]byte{9}, 32)
	keys := link.NewKeyring("k1", key)
	db, err := p.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := worker.NewIssuer(p.Deps("issuer"), db, keys)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	publicURL := "http://" + ln.Addr().String()
	rd, _, err := worker.NewRedeemer(p.Deps("redeemer"), worker.RedeemerSettings{
		Seeds: [][]byte{bytes.Repeat([]byte{3}, 32)}, PublicURL: publicURL, PortalURL: "https://portal.example",
		// Each racer has its own client address (X-Forwarded-For), so
		// the per-IP limit does not throttle the test.
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewUnstartedServer(rd.Handler())
	web.Listener.Close()
	web.Listener = ln
	web.Start()
	t.Cleanup(web.Close)
	runCtx, stop := context.WithCancel(context.Background())
	issDone := make(chan error, 1)
	go func() { issDone <- iss.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-issDone })
	return keys, publicURL

}
