package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/recipient"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// The crash harness: the production shape (an external nats-server
// process, two mailer processes, aws-ses-v2-local), a burst of mail
// commands, and a SIGKILL as the burst starts, of one mailer or of
// nats-server itself (restarted 2s later). It counts the emails per mail id
// in the emulator's store: a mail id missing is a loss, a second email a
// duplicate. TestCrashDuplicates runs it many times and logs the
// distribution (docs/performance.md, "Duplicates on a crash").

// natsProc is a nats-server child process on a fixed port and store, so a
// restarted one is the same server to its clients.
type natsProc struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

var natsBuild struct {
	sync.Once
	bin string
	err error
}

// natsServerBinary builds the nats-server of go.mod once per test run.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsBuild.Do(func() {
		dir, err := os.MkdirTemp("", "linkpipe-nats-bin")
		if err != nil {
			natsBuild.err = err
			return
		}
		natsBuild.bin = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsBuild.bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBuild.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsBuild.err != nil {
		t.Fatal(natsBuild.err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(natsBuild.bin)) })
	return natsBuild.bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNATSProc(t *testing.T) *natsProc {
	t.Helper()
	p := &natsProc{bin: natsServerBinary(t), dir: t.TempDir(), port: freePort(t)}
	p.start(t)
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *natsProc) url() string { return "nats://127.0.0.1:" + strconv.Itoa(p.port) }

func (p *natsProc) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "-js", "-sd", p.dir, "-a", "127.0.0.1", "-p", strconv.Itoa(p.port))
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p.port), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "nats-server listening")
}

func (p *natsProc) kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// crashRig is the production shape the harness kills parts of.
type crashRig struct {
	t       *testing.T
	nats    *natsProc
	local   *sestest.Local
	js      jetstream.JetStream
	env     []string
	mailers []*child
	// all is every mailer started, killed ones too (their logs).
	all   []*child
	trial int
}

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	r := &crashRig{t: t, nats: startNATSProc(t), local: sestest.StartLocal(t)}
	nc, err := nats.Connect(r.nats.url(), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	r.env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + r.nats.url(), "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example"}, r.local.Env()...)
	// LINKPIPE_CRASH_MAILER_ENV: more settings of the mailers, K=V,K=V.
	if extra := os.Getenv("LINKPIPE_CRASH_MAILER_ENV"); extra != "" {
		r.env = append(r.env, strings.Split(extra, ",")...)
	}
	r.mailers = []*child{r.startMailer(), r.startMailer()}
	return r
}

func (r *crashRig) startMailer() *child {
	c := startChild(r.t, append(r.env, "LINKPIPE_DATA_DIR="+r.t.TempDir()))
	r.all = append(r.all, c)
	return c
}

// sendLog returns the log lines of every mailer about sending mailID.
func (r *crashRig) sendLog(mailID string) []string {
	var out []string
	for _, c := range r.all {
		for _, line := range strings.Split(c.stderr.String(), "\n") {
			if (mailID != "" && strings.Contains(line, mailID) && (strings.Contains(line, "mail sent") || strings.Contains(line, "already done"))) ||
				(mailID == "" && strings.Contains(line, "NATS reconnected")) {
				out = append(out, fmt.Sprintf("pid %d: %s", c.cmd.Process.Pid, line))
			}
		}
	}
	return out
}

// counts returns the number of emails per mail id since the trial
// cleared the emulator's store.
func (r *crashRig) counts(ctx context.Context) map[string]int {
	emails, err := r.local.Fetch(ctx)
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, e := range emails {
		out[e.Header(mail.HeaderEntityRefID)]++
	}
	return out
}

// crashResult is one trial's outcome: emails lost, duplicates, emails at
// SES when the kill returned, and copies of a claimed delivery the mailers
// held back (see package mailer, "After a NATS outage").
type crashResult struct {
	lost, dups, atKill, heldBack int
}

// heldBack counts the mailers' log lines about a copy of a claimed
// delivery, since they started.
func (r *crashRig) heldBack() int {
	n := 0
	for _, c := range r.all {
		n += strings.Count(c.stderr.String(), "another copy of this delivery is being sent")
	}
	return n
}

// run publishes a burst of n mail commands, calls kill once `after`
// emails of the burst have reached SES, waits until every command is
// settled, and counts.
func (r *crashRig) run(n, after int, kill func()) crashResult {
	t := r.t
	r.trial++
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if resp, err := http.Post(r.local.URL+"/clear-store", "application/json", nil); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	held := r.heldBack()
	cmds := make([]*mail.Command, n)
	book := recipient.NewBook(r.js)
	for i := range n {
		cmds[i] = command(t, fmt.Sprintf("evt-t%03d-%03d", r.trial, i), fmt.Sprintf("client%03d@example.com", i))
		if err := book.Put(ctx, cmds[i].LinkID, cmds[i].To); err != nil {
			t.Fatal(err)
		}
	}
	// The burst: every command at once, as a batch of appointments
	// queues them.
	futures := make([]jetstream.PubAckFuture, 0, n)
	for _, c := range cmds {
		data, _ := json.Marshal(c)
		f, err := r.js.PublishMsgAsync(&nats.Msg{Subject: bus.MailCommandPrefix + c.MailID, Data: data,
			Header: nats.Header{jetstream.MsgIDHeader: []string{c.MailID}}})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("burst not acknowledged")
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			t.Fatal(err)
		default:
		}
	}
	total := func(m map[string]int) int {
		s := 0
		for _, v := range m {
			s += v
		}
		return s
	}
	eventually.True(t, 60*time.Second, func() bool { return total(r.counts(ctx)) >= after }, "the burst to start")
	kill()
	atKill := total(r.counts(ctx))
	var cons jetstream.Consumer
	eventually.True(t, 2*time.Minute, func() bool {
		var err error
		if cons == nil {
			if cons, err = r.js.Consumer(ctx, bus.StreamMail, bus.ConsumerMailer); err != nil {
				cons = nil
				return false
			}
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && len(r.counts(ctx)) == n
	}, "every command settled and every mail id sent")
	got := r.counts(ctx)
	res := crashResult{atKill: atKill, heldBack: r.heldBack() - held}
	for _, c := range cmds {
		switch k := got[c.MailID]; {
		case k == 0:
			res.lost++
		case k > 1:
			res.dups += k - 1
			if res.dups <= 2 {
				if res.dups == 1 || k > 2 {
					for _, line := range r.sendLog("") {
						t.Logf("reconnect: %s", line)
					}
				}
				for _, line := range r.sendLog(c.MailID) {
					t.Logf("duplicate %s: %s", c.MailID, line)
				}
			}
		}
	}
	return res
}

// TestCrashDuplicates runs the crash harness LINKPIPE_CRASH_TRIALS times
// for each kind of kill in LINKPIPE_CRASH_KINDS (default "mailer,nats"):
// SIGKILL one of the two mailers, or nats-server for 2s. It fails on a
// lost email and logs the distribution of duplicates per kill. Without
// LINKPIPE_CRASH_TRIALS it is skipped (it takes minutes);
// LINKPIPE_CRASH_MAILER_ENV=K=V,... adds settings to the mailers.
func TestCrashDuplicates(t *testing.T) {
	trials, _ := strconv.Atoi(os.Getenv("LINKPIPE_CRASH_TRIALS"))
	if trials <= 0 {
		t.Skip("set LINKPIPE_CRASH_TRIALS=N to kill N times of each kind")
	}
	kinds := os.Getenv("LINKPIPE_CRASH_KINDS")
	if kinds == "" {
		kinds = "mailer,nats"
	}
	const n, after = 200, 10
	r := newCrashRig(t)
	for _, kind := range strings.Split(kinds, ",") {
		var dist []int
		for range trials {
			var kill func()
			switch kind {
			case "mailer":
				kill = func() {
					victim := r.mailers[0]
					_ = victim.cmd.Process.Signal(syscall.SIGKILL)
					_ = victim.cmd.Wait()
					r.mailers[0] = r.startMailer()
				}
			case "nats":
				kill = func() {
					t.Logf("nats-server killed at %s", time.Now().Format(time.StampMicro))
					r.nats.kill()
					time.Sleep(2 * time.Second)
					r.nats.start(t)
					t.Logf("nats-server listening again at %s", time.Now().Format(time.StampMicro))
				}
			default:
				t.Fatalf("unknown kind %q", kind)
			}
			res := r.run(n, after, kill)
			t.Logf("kill %s #%d: %d emails at the kill, %d lost, %d duplicate(s), %d copies held back", kind, r.trial, res.atKill, res.lost, res.dups, res.heldBack)
			if res.lost > 0 {
				t.Errorf("kill %s #%d: %d emails lost", kind, r.trial, res.lost)
			}
			dist = append(dist, res.dups)
		}
		sort.Ints(dist)
		sum := 0
		for _, d := range dist {
			sum += d
		}
		t.Logf("kill %s: duplicates per kill over %d kills: %v (mean %.1f, max %d)", kind, len(dist), dist,
			float64(sum)/float64(len(dist)), dist[len(dist)-1])
	}
}
