package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// loadStack is what the load command drives: a NATS server, an issuer, a
// sink mailer and a redeemer, either all in this process (embedded) or
// each in its own (processes, the production shape).
type loadStack struct {
	natsURL string
	// redeemerURL is the base of the links; inboxURL the sink's inbox;
	// sesURL the SES emulator the mailer sends to instead (-mail ses).
	redeemerURL, inboxURL, sesURL string
	// monitorURL is the monitoring endpoint of the nats-server the load
	// command started ("" for the embedded stack and -nats-url).
	monitorURL string
	keys       *link.Keyring
	practice   string
	// procs are the processes whose CPU time is measured, by role.
	procs []loadProc
	close func()
}

// sesRateDefault is the MaxSendRate of the emulator's account by default:
// an account raised well above what the pipeline sends on one machine.
const sesRateDefault = 5000

// loadProc is one measured process.
type loadProc struct {
	role string
	pid  int
}

// runLoad measures what a user of the pipeline cares about:
//   - emails: closed-loop publishers (-concurrency) publish -actions
//     sign-in actions (each waits for JetStream's ack); emails/s from the
//     first publish until the last sent event, action→sent latency
//     percentiles, the emails in the sink, and CPU per emailed link of
//     each process (utime+stime from /proc/<pid>/stat);
//   - redemptions: -redeem links redeemed (POST → 303) at a fixed open-loop
//     rate (-redeem-rate), latency from each request's scheduled time, and
//     how far the used events trail the last redemption.
//
// -shape embedded runs the all-in-one stack in this process; -shape
// processes runs a nats-server process (-nats-server, or built from the
// module) with -sync always|default and the issuer, mailer (sink driver)
// and redeemer binaries (-bin, or built from ./cmd) as separate processes,
// or uses the server at -nats-url.
func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("linkpipe load", flag.ContinueOnError)
	fs.SetOutput(stdout)
	shape := fs.String("shape", "embedded", "embedded (one process, embedded NATS) or processes (nats-server, issuer, mailer, redeemer each a process)")
	nActions := fs.Int("actions", 20000, "sign-in actions to publish (one email each)")
	conc := fs.Int("concurrency", 32, "closed-loop publishers, each waiting for its publish's ack")
	nRedeem := fs.Int("redeem", 5000, "links to redeem (at most -actions)")
	rate := fs.Float64("redeem-rate", 1000, "redemptions per second, open loop")
	redeemConc := fs.Int("redeem-concurrency", 0, "also redeem -redeem more links with this many closed-loop clients (0: not)")
	syncMode := fs.String("sync", "default", "processes: nats-server's JetStream sync_interval, always or default")
	natsBin := fs.String("nats-server", "", "processes: nats-server binary (default: built from the module into a temporary directory)")
	binDir := fs.String("bin", "", "processes: directory of the issuer, mailer and redeemer binaries (default: built from ./cmd)")
	natsURL := fs.String("nats-url", "", "processes: use this NATS server instead of starting one")
	natsPID := fs.Int("nats-pid", 0, "processes with -nats-url: pid of that server, to measure its CPU")
	mailTo := fs.String("mail", "sink", "processes: the mailer's driver, sink or ses (an aws-ses-v2-local process from testdeps/, whose own ceiling is measured too)")
	sesRate := fs.Float64("ses-rate", sesRateDefault, "processes with -mail ses: the MaxSendRate (emails/s) the emulator's account reports to GetAccount, from which the mailer sizes its pace and emails in flight as it does with SES (0: no account; the mailer cannot read a rate and keeps 8 in flight)")
	keep := fs.Bool("keep", false, "keep the temporary directory (logs, data) and print it")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up waiting for the emails after this long")
	if err := fs.Parse(args); err != nil {
		return worker.BadConfig(err)
	}
	if *shape != "embedded" && *shape != "processes" {
		return worker.BadConfig(fmt.Errorf("linkpipe load: -shape %q: embedded or processes", *shape))
	}
	if *syncMode != "always" && *syncMode != "default" {
		return worker.BadConfig(fmt.Errorf("linkpipe load: -sync %q: always or default", *syncMode))
	}
	if *mailTo != "sink" && *mailTo != "ses" || *mailTo == "ses" && *shape != "processes" {
		return worker.BadConfig(fmt.Errorf("linkpipe load: -mail %q: sink, or ses with -shape processes", *mailTo))
	}
	if *sesRate < 0 || math.IsNaN(*sesRate) || math.IsInf(*sesRate, 0) {
		return worker.BadConfig(fmt.Errorf("linkpipe load: -ses-rate %v: a number of emails/s, 0 or more", *sesRate))
	}
	if *mailTo != "ses" && *sesRate != sesRateDefault {
		return worker.BadConfig(errors.New("linkpipe load: -ses-rate is the SES emulator's account: only with -mail ses"))
	}
	if *nActions < 1 || *conc < 1 || *rate <= 0 {
		return worker.BadConfig(errors.New("linkpipe load: -actions, -concurrency and -redeem-rate must be positive"))
	}
	*nRedeem = min(*nRedeem, *nActions)
	if *redeemConc > 0 {
		*nRedeem = min(*nRedeem, *nActions/2)
	}
	dir, err := os.MkdirTemp("", "linkpipe-load-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stdout, "working directory %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	var st *loadStack
	if *shape == "embedded" {
		st, err = embeddedStack(ctx, dir)
	} else {
		st, err = processStack(ctx, stdout, processOptions{dir: dir, sync: *syncMode, natsBin: *natsBin, binDir: *binDir,
			natsURL: *natsURL, natsPID: *natsPID, mail: *mailTo, sesRate: *sesRate})
	}
	if err != nil {
		return fmt.Errorf("linkpipe load: %w", err)
	}
	defer st.close()

	nc, err := nats.Connect(st.natsURL, nats.Name("linkpipe-load"))
	if err != nil {
		return fmt.Errorf("linkpipe load: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	r := &loadRun{st: st, nc: nc, js: js, out: stdout, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	if err := r.emails(ctx, *nActions, *conc, *timeout); err != nil {
		return fmt.Errorf("linkpipe load: %w", err)
	}
	if st.sesURL != "" {
		if err := r.sesCeiling(ctx, min(*nActions, 3000), 8, *conc); err != nil {
			return fmt.Errorf("linkpipe load: %w", err)
		}
	}
	if *nRedeem > 0 {
		if err := r.redeemOpenLoop(ctx, 0, *nRedeem, *rate); err != nil {
			return fmt.Errorf("linkpipe load: %w", err)
		}
		if *redeemConc > 0 {
			if err := r.redeemClosedLoop(ctx, *nRedeem, *nRedeem, *redeemConc); err != nil {
				return fmt.Errorf("linkpipe load: %w", err)
			}
		}
	}
	return nil
}

// embeddedStack is the all-in-one stack (one replica of each worker on the
// embedded server) in dir; its CPU is this process's.
func embeddedStack(ctx context.Context, dir string) (*loadStack, error) {
	st, err := devstack.Start(ctx, devstack.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSPort: -1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		if st != nil {
			st.Close()
		}
		return nil, err
	}
	return &loadStack{natsURL: st.NATSURL, redeemerURL: st.URL, inboxURL: st.URL + "/inbox", keys: st.Keys(),
		practice: devstack.DemoPractice, procs: []loadProc{{"linkpipe load (all, incl. load generator)", os.Getpid()}},
		close: func() { st.Close() }}, nil
}

// loadRun is one run of the load command against a stack.
type loadRun struct {
	st  *loadStack
	nc  *nats.Conn
	js  jetstream.JetStream
	out io.Writer
	run string
	// emailsPerSec is what the emails phase measured.
	emailsPerSec float64
}

func (r *loadRun) eventID(i int) string { return "load-" + r.run + "-" + strconv.Itoa(i) }
func (r *loadRun) clientID(i int) string {
	return "c" + r.run + "-" + strconv.Itoa(i)
}

// token is the link the i-th action's email carries (the load tool knows
// the link key).
func (r *loadRun) token(i int) (string, error) {
	return r.st.keys.Mint(r.st.keys.CurrentKid(), events.PurposeSignin, scope.Signin(r.st.practice, r.clientID(i)), r.eventID(i))
}

// emails publishes n sign-ins from conc closed-loop publishers and waits
// for every sent event.
func (r *loadRun) emails(ctx context.Context, n, conc int, timeout time.Duration) error {
	linkIndex := make(map[string]int, n)
	for i := range n {
		tok, err := r.token(i)
		if err != nil {
			return err
		}
		id, err := link.ID(tok)
		if err != nil {
			return err
		}
		linkIndex[id] = i
	}
	published := make([]time.Time, n)
	sentAt := make([]time.Time, n)
	var mu sync.Mutex
	var sent, started atomic.Int64
	all := make(chan struct{})
	// Read published times under mu: the publisher stamps before it publishes.
	sub, err := r.nc.Subscribe(events.LinkSubject("*", events.TypeSent), func(m *nats.Msg) {
		now := time.Now()
		id, _, ok := cutLinkSubject(m.Subject)
		if !ok {
			return
		}
		i, ok := linkIndex[id]
		if !ok {
			return
		}
		mu.Lock()
		first := sentAt[i].IsZero()
		if first {
			sentAt[i] = now
		}
		mu.Unlock()
		if first && sent.Add(1) == int64(n) {
			close(all)
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	if err := r.nc.Flush(); err != nil {
		return err
	}
	cpu0 := r.cpu()
	srv0, srvOK := r.serverCounts(ctx)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				a := &events.SigninRequested{Envelope: events.Envelope{EventID: r.eventID(i), PracticeID: r.st.practice},
					Client: events.Client{ID: r.clientID(i), Email: r.clientID(i) + "@example.com"}}
				data, err := events.Marshal(a)
				if err != nil {
					failed.Add(1)
					continue
				}
				msg := nats.NewMsg(a.Subject())
				msg.Data = data
				msg.Header.Set(jetstream.MsgIDHeader, a.EventID)
				mu.Lock()
				published[i] = time.Now()
				mu.Unlock()
				started.Add(1)
				if _, err := r.js.PublishMsg(ctx, msg); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	pubDur := time.Since(t0)
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d publishes failed", f, n)
	}
	select {
	case <-all:
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d emails sent after %s", sent.Load(), n, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	total := time.Since(t0)
	cpu1 := r.cpu()
	srv1, srv1OK := r.serverCounts(ctx)
	mu.Lock()
	lat := make([]time.Duration, n)
	for i := range n {
		lat[i] = sentAt[i].Sub(published[i])
	}
	mu.Unlock()
	where, accepted := "the sink", 0
	if r.st.sesURL != "" {
		where = "the SES emulator"
		accepted, err = sesCount(ctx, r.st.sesURL)
	} else {
		accepted, err = r.sinkCount(ctx)
	}
	if err != nil {
		return err
	}
	r.emailsPerSec = float64(n) / total.Seconds()
	fmt.Fprintf(r.out, "emails: %d actions published by %d closed-loop publishers in %s (%.0f/s); %d sent in %s: %.0f emails/s; %d in %s\n",
		n, conc, pubDur.Round(time.Millisecond), float64(n)/pubDur.Seconds(), n, total.Round(time.Millisecond),
		r.emailsPerSec, accepted, where)
	fmt.Fprintf(r.out, "action→sent latency: %s\n", percentiles(lat))
	r.reportCPU("emailed link", cpu0, cpu1, n)
	if srvOK && srv1OK {
		r.reportServer("emailed link", srv0, srv1, n)
	}
	return nil
}

// redeemOpenLoop redeems links [from, from+n) at rate per second: each
// POST starts at its scheduled time whatever the earlier ones do, and its
// latency counts from that time.
func (r *loadRun) redeemOpenLoop(ctx context.Context, from, n int, rate float64) error {
	tokens, err := r.tokens(from, n)
	if err != nil {
		return err
	}
	used, stopUsed, err := r.countUsed(from, n)
	if err != nil {
		return err
	}
	defer stopUsed()
	client := r.httpClient(1024)
	lat := make([]time.Duration, n)
	var bad atomic.Int64
	var wg sync.WaitGroup
	cpu0 := r.cpu()
	srv0, srvOK := r.serverCounts(ctx)
	t0 := time.Now()
	for i := range n {
		at := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !r.redeem(ctx, client, from+i, tokens[i]) {
				bad.Add(1)
			}
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	total := time.Since(t0)
	done := time.Now()
	lag := used.wait(30 * time.Second)
	cpu1 := r.cpu()
	srv1, srv1OK := r.serverCounts(ctx)
	fmt.Fprintf(r.out, "redeem open loop at %.0f/s (POST → 303): %d in %s: %.0f/s; latency %s; unexpected answers %d\n",
		rate, n, total.Round(time.Millisecond), float64(n)/total.Seconds(), percentiles(lat), bad.Load())
	r.reportUsedLag(used, n, done, lag)
	r.reportCPU("redemption", cpu0, cpu1, n)
	if srvOK && srv1OK {
		r.reportServer("redemption", srv0, srv1, n)
	}
	return nil
}

// redeemClosedLoop redeems links [from, from+n) with conc clients, each
// sending its next POST when the previous one is answered.
func (r *loadRun) redeemClosedLoop(ctx context.Context, from, n, conc int) error {
	tokens, err := r.tokens(from, n)
	if err != nil {
		return err
	}
	used, stopUsed, err := r.countUsed(from, n)
	if err != nil {
		return err
	}
	defer stopUsed()
	client := r.httpClient(conc)
	lat := make([]time.Duration, n)
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	cpu0 := r.cpu()
	srv0, srvOK := r.serverCounts(ctx)
	t0 := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				if !r.redeem(ctx, client, from+i, tokens[i]) {
					bad.Add(1)
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	total := time.Since(t0)
	done := time.Now()
	lag := used.wait(30 * time.Second)
	cpu1 := r.cpu()
	srv1, srv1OK := r.serverCounts(ctx)
	fmt.Fprintf(r.out, "redeem closed loop, %d clients (POST → 303): %d in %s: %.0f/s; latency %s; unexpected answers %d\n",
		conc, n, total.Round(time.Millisecond), float64(n)/total.Seconds(), percentiles(lat), bad.Load())
	r.reportUsedLag(used, n, done, lag)
	r.reportCPU("redemption", cpu0, cpu1, n)
	if srvOK && srv1OK {
		r.reportServer("redemption", srv0, srv1, n)
	}
	return nil
}

func (r *loadRun) tokens(from, n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		t, err := r.token(from + i)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func (r *loadRun) httpClient(conns int) *http.Client {
	return &http.Client{
		Transport:     &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// redeem POSTs link i as a client of its own (X-Forwarded-For, which the
// stack trusts from loopback, so the per-IP limits do not throttle the one
// load generator) and reports whether the answer was the 303.
func (r *loadRun) redeem(ctx context.Context, c *http.Client, i int, token string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.st.redeemerURL+"/l/"+token, nil)
	req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", byte(i>>16), byte(i>>8), byte(i)))
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusSeeOther
}

// usedCounter counts the used events of a set of links.
type usedCounter struct {
	want int
	n    atomic.Int64
	last atomic.Int64 // unix nanos of the last one
	all  chan struct{}
}

// wait returns when every used event arrived (or after timeout): the time
// of the last one.
func (u *usedCounter) wait(timeout time.Duration) time.Time {
	select {
	case <-u.all:
	case <-time.After(timeout):
	}
	return time.Unix(0, u.last.Load())
}

func (r *loadRun) countUsed(from, n int) (*usedCounter, func(), error) {
	want := make(map[string]bool, n)
	for i := from; i < from+n; i++ {
		tok, err := r.token(i)
		if err != nil {
			return nil, nil, err
		}
		id, _ := link.ID(tok)
		want[id] = true
	}
	u := &usedCounter{want: n, all: make(chan struct{})}
	var mu sync.Mutex
	sub, err := r.nc.Subscribe(events.LinkSubject("*", events.TypeUsed), func(m *nats.Msg) {
		id, _, ok := cutLinkSubject(m.Subject)
		mu.Lock()
		hit := ok && want[id]
		delete(want, id)
		mu.Unlock()
		if !hit {
			return
		}
		u.last.Store(time.Now().UnixNano())
		if u.n.Add(1) == int64(n) {
			close(u.all)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := r.nc.Flush(); err != nil {
		return nil, nil, err
	}
	return u, func() { sub.Unsubscribe() }, nil
}

func (r *loadRun) reportUsedLag(u *usedCounter, n int, done, last time.Time) {
	got := u.n.Load()
	if got < int64(n) {
		fmt.Fprintf(r.out, "  used events: %d of %d within 30s of the last redemption\n", got, n)
		return
	}
	fmt.Fprintf(r.out, "  used events: all %d, the last %s after the last redemption's answer\n", n, max(0, last.Sub(done)).Round(time.Millisecond))
}

// cpu reads the CPU time of every measured process.
func (r *loadRun) cpu() []time.Duration {
	out := make([]time.Duration, len(r.st.procs))
	for i, p := range r.st.procs {
		out[i], _ = procCPU(p.pid)
	}
	return out
}

func (r *loadRun) reportCPU(per string, cpu0, cpu1 []time.Duration, n int) {
	var total time.Duration
	line := "CPU per " + per + ":"
	for i, p := range r.st.procs {
		d := cpu1[i] - cpu0[i]
		total += d
		line += fmt.Sprintf(" %s %.3f ms;", p.role, float64(d.Microseconds())/1000/float64(n))
	}
	if len(r.st.procs) > 1 {
		line += fmt.Sprintf(" total %.3f ms", float64(total.Microseconds())/1000/float64(n))
	}
	fmt.Fprintln(r.out, line)
}

// sinkCount is how many emails the sink holds: the newest's inbox id.
func (r *loadRun) sinkCount(ctx context.Context) (int, error) {
	var list []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, r.st.inboxURL+".json?limit=1&bodies=false", &list); err != nil {
		return 0, fmt.Errorf("inbox: %w", err)
	}
	if len(list) == 0 {
		return 0, nil
	}
	return strconv.Atoi(list[0].ID)
}

// percentiles formats p50 and p99 of lat (sorted in place).
func percentiles(lat []time.Duration) string {
	if len(lat) == 0 {
		return "none"
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	return fmt.Sprintf("p50 %s p99 %s max %s", p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond),
		lat[len(lat)-1].Round(10*time.Microsecond))
}
