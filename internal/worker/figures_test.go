package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// TestR3Figures measures, on one server and on an in-process 3-node
// cluster with R3 streams (the default sync policy), and on one server
// fsyncing every write (the single-server policy of docs/operations.md), the
// issuer's actions/s, redemptions/s and click latency, with the issuer
// and redeemer wired as their binaries wire them. It is a measurement,
// not a check: it runs only with LINKPIPE_FIGURES=1 (figures in
// docs/performance.md):
//
//	LINKPIPE_FIGURES=1 go test -run TestR3Figures -v ./internal/worker/
func TestR3Figures(t *testing.T) {
	if os.Getenv("LINKPIPE_FIGURES") != "1" {
		t.Skip("a measurement; set LINKPIPE_FIGURES=1")
	}
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
		r    string
	}{
		{"single server, R1", func(t *testing.T) string { return bustest.Start(t).URL }, "1"},
		{"single server, R1, sync_interval always", func(t *testing.T) string {
			srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Dir: t.TempDir(), Port: -1, SyncAlways: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
			return srv.ClientURL()
		}, "1"},
		{"3-node cluster, R3", func(t *testing.T) string { return bustest.StartCluster(t, 3).URL }, "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			url := tc.url(t)
			keys, publicURL := startStack(ctx, t, url, tc.r)
			nc, js, err := bus.Connect(bus.ConnectOptions{URL: url, Name: t.Name()})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			const nActions, nRedeem, conc = 5000, 2000, 32
			run := fmt.Sprint(time.Now().UnixNano())
			tokens := make([]string, nActions)
			begin := time.Now()
			var pub sync.WaitGroup
			for w := range conc {
				pub.Go(func() {
					for i := w; i < nActions; i += conc {
						eventID, cl := fmt.Sprintf("f%s-%d", run, i), fmt.Sprintf("c%d", i)
						if _, err := events.Publish(ctx, js, &events.SigninRequested{
							Envelope: events.Envelope{EventID: eventID, PracticeID: "acme"},
							Client:   events.Client{ID: cl, Email: "pat@example.com", Name: "Pat"}}); err != nil {
							t.Error(err)
							return
						}
						tok, err := keys.Mint("k1", events.PurposeSignin, scope.Signin("acme", cl), eventID)
						if err != nil {
							t.Error(err)
							return
						}
						tokens[i] = tok
					}
				})
			}
			pub.Wait()
			cons, err := js.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
			if err != nil {
				t.Fatal(err)
			}
			eventually.True(t, 4*time.Minute, func() bool {
				info, err := cons.Info(ctx)
				return err == nil && info.NumPending == 0 && info.NumAckPending == 0
			}, "every action issued")
			issued := time.Since(begin)

			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			measure := func(method string) (time.Duration, []time.Duration) {
				lat := make([][]time.Duration, conc)
				start := time.Now()
				var wg sync.WaitGroup
				for w := range conc {
					wg.Go(func() {
						for i := w; i < nRedeem; i += conc {
							req, _ := http.NewRequest(method, publicURL+"/l/"+tokens[i], nil)
							req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.1.%d.%d", i/250, i%250))
							t0 := time.Now()
							resp, err := client.Do(req)
							if err != nil {
								t.Error(err)
								return
							}
							resp.Body.Close()
							lat[w] = append(lat[w], time.Since(t0))
							if want := map[string]int{http.MethodGet: 200, http.MethodPost: 303}[method]; resp.StatusCode != want {
								t.Errorf("%s link %d: %d, want %d", method, i, resp.StatusCode, want)
								return
							}
						}
					})
				}
				wg.Wait()
				all := slices.Concat(lat...)
				slices.Sort(all)
				return time.Since(start), all
			}
			q := func(all []time.Duration, p float64) time.Duration {
				return all[int(float64(len(all)-1)*p)].Round(10 * time.Microsecond)
			}
			getTime, gets := measure(http.MethodGet)
			postTime, posts := measure(http.MethodPost)
			t.Logf("%s: issuer %d actions in %v: %.0f actions/s; clicks (GET) %.0f/s p50 %v p99 %v; redemptions (POST) %.0f/s p50 %v p99 %v",
				tc.name, nActions, issued.Round(time.Millisecond), nActions/issued.Seconds(),
				float64(len(gets))/getTime.Seconds(), q(gets, .5), q(gets, .99),
				float64(len(posts))/postTime.Seconds(), q(posts, .5), q(posts, .99))
		})
	}
}
