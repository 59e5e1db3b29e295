package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// runLoad starts an all-in-one stack (one replica of each worker on the
// embedded server) in a temporary directory, then measures:
//   - issuer: N sign-in actions published as fast as possible; actions/s from
//     the first publish until the issuer consumer has nothing pending;
//   - redemptions: M links redeemed by C concurrent clients with POST, and
//     the click latency (GET of the confirm page) percentiles.
func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("linkpipe load", flag.ContinueOnError)
	fs.SetOutput(stdout)
	nActions := fs.Int("actions", 20000, "sign-in actions to issue")
	nRedeem := fs.Int("redeem", 5000, "links to click and redeem (at most -actions)")
	conc := fs.Int("concurrency", 32, "concurrent HTTP clients")
	if err := fs.Parse(args); err != nil {
		return worker.BadConfig(err)
	}
	if *nRedeem > *nActions {
		*nRedeem = *nActions
	}
	dir, err := os.MkdirTemp("", "linkpipe-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := devstack.Start(ctx, devstack.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		return err
	}
	defer st.Close()
	js := st.JetStream()
	fmt.Fprintf(stdout, "embedded stack at %s (NATS %s), one replica of each worker\n", st.URL, st.NATSURL)

	// Issuer throughput.
	ids := make([]string, *nActions)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	start := time.Now()
	for i := range ids {
		ids[i] = "load-" + run + "-" + strconv.Itoa(i)
		a := &events.SigninRequested{Envelope: events.Envelope{EventID: ids[i], PracticeID: devstack.DemoPractice},
			Client: events.Client{ID: "c" + strconv.Itoa(i), Email: "c" + strconv.Itoa(i) + "@example.com"}}
		data, err := events.Marshal(a)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(a.Subject())
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ids[i])
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("load: publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return errors.New("load: publishing did not complete in 2 minutes")
	}
	published := time.Since(start)
	cons, err := js.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		return err
	}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	issued := time.Since(start)
	fmt.Fprintf(stdout, "issuer: %d actions published in %s (%.0f/s); all issued in %s: %.0f actions/s\n",
		*nActions, published.Round(time.Millisecond), float64(*nActions)/published.Seconds(),
		issued.Round(time.Millisecond), float64(*nActions)/issued.Seconds())

	// Redemptions: the load tool knows the dev stack's link key.
	tokens := make([]string, *nRedeem)
	for i := range tokens {
		if tokens[i], err = st.Keys().Mint(st.Keys().CurrentKid(), events.PurposeSignin, scope.Signin(devstack.DemoPractice, "c"+strconv.Itoa(i)), ids[i]); err != nil {
			return err
		}
	}
	client := &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	measure := func(method string) (time.Duration, []time.Duration, int64, error) {
		var next atomic.Int64
		var bad atomic.Int64
		lat := make([]time.Duration, len(tokens))
		var wg sync.WaitGroup
		t0 := time.Now()
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(tokens) {
						return
					}
					req, _ := http.NewRequestWithContext(ctx, method, st.URL+"/l/"+tokens[i], nil)
					t := time.Now()
					resp, err := client.Do(req)
					lat[i] = time.Since(t)
					if err != nil {
						bad.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					want := http.StatusOK
					if method == http.MethodPost {
						want = http.StatusSeeOther
					}
					if resp.StatusCode != want {
						bad.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(t0), lat, bad.Load(), nil
	}
	report := func(name string, total time.Duration, lat []time.Duration, bad int64) {
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		fmt.Fprintf(stdout, "%s: %d in %s: %.0f/s; latency p50 %s p99 %s; unexpected answers %d\n", name, len(lat),
			total.Round(time.Millisecond), float64(len(lat))/total.Seconds(), p(0.50).Round(time.Microsecond),
			p(0.99).Round(time.Microsecond), bad)
	}
	total, lat, bad, _ := measure(http.MethodGet)
	report("click (GET confirm page)", total, lat, bad)
	total, lat, bad, _ = measure(http.MethodPost)
	report("redeem (POST, 303 to portal)", total, lat, bad)
	return nil
}
