package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// loadPractice is the practice the production-shape load publishes for.
const loadPractice = "load"

// processOptions say how to start the production-shape stack.
type processOptions struct {
	dir     string
	sync    string // always or default
	natsBin string
	binDir  string
	natsURL string
	natsPID int
	mail    string // sink or ses
	// sesRate is the MaxSendRate the emulator's account reports (0: no
	// account, GetAccount fails).
	sesRate float64
}

// processStack starts a nats-server (unless o.natsURL), then the issuer,
// the mailer with the sink driver and the redeemer, each a process of its
// own with its data and log (stderr, at info) in o.dir, and waits for each
// one's ready line.
func processStack(ctx context.Context, stdout io.Writer, o processOptions) (_ *loadStack, err error) {
	st := &loadStack{practice: loadPractice}
	var cmds []*exec.Cmd
	st.close = func() {
		for i := len(cmds) - 1; i >= 0; i-- {
			stopProcess(cmds[i])
		}
	}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	bin := o.binDir
	if bin == "" {
		bin = filepath.Join(o.dir, "bin")
		fmt.Fprintf(stdout, "building issuer, mailer, redeemer into %s\n", bin)
		if err := goBuild(ctx, bin, "github.com/linkpipe/linkpipe/cmd/issuer", "github.com/linkpipe/linkpipe/cmd/mailer",
			"github.com/linkpipe/linkpipe/cmd/redeemer"); err != nil {
			return nil, err
		}
	}

	st.natsURL = o.natsURL
	if st.natsURL == "" {
		natsBin := o.natsBin
		if natsBin == "" {
			natsBin = filepath.Join(o.dir, "bin", "nats-server")
			fmt.Fprintf(stdout, "building nats-server from the module into %s\n", natsBin)
			if err := goBuild(ctx, natsBin, "github.com/nats-io/nats-server/v2"); err != nil {
				return nil, err
			}
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(o.dir, "nats.conf")
		js := fmt.Sprintf("jetstream {\n  store_dir: %q\n", filepath.Join(o.dir, "nats"))
		if o.sync == "always" {
			js += "  sync_interval: always\n"
		}
		js += "}\n"
		monitor, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\nhttp: \"127.0.0.1:%d\"\n%s", port, monitor, js)), 0o600); err != nil {
			return nil, err
		}
		cmd, err := startProcess(natsBin, []string{"-c", conf}, nil, filepath.Join(o.dir, "nats-server.log"), nil)
		if err != nil {
			return nil, fmt.Errorf("nats-server: %w", err)
		}
		cmds = append(cmds, cmd)
		st.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
		st.monitorURL = fmt.Sprintf("http://127.0.0.1:%d", monitor)
		if err := waitForNATS(ctx, st.natsURL); err != nil {
			return nil, err
		}
		st.procs = append(st.procs, loadProc{"nats-server", cmd.Process.Pid})
		fmt.Fprintf(stdout, "nats-server (sync_interval %s) at %s, pid %d\n", o.sync, st.natsURL, cmd.Process.Pid)
	} else if o.natsPID > 0 {
		st.procs = append(st.procs, loadProc{"nats-server", o.natsPID})
	}

	mailEnv := []string{"LINKPIPE_MAIL_DRIVER=sink", "LINKPIPE_INBOX_ADDR=127.0.0.1:0"}
	if o.mail == "ses" {
		cmd, url, err := startSESLocal(ctx, o.dir, o.sesRate)
		if cmd != nil {
			cmds = append(cmds, cmd)
		}
		if err != nil {
			return nil, err
		}
		st.sesURL = url
		st.procs = append(st.procs, loadProc{"aws-ses-v2-local", cmd.Process.Pid})
		fmt.Fprintf(stdout, "aws-ses-v2-local at %s, pid %d\n", url, cmd.Process.Pid)
		mailEnv = []string{"LINKPIPE_MAIL_DRIVER=ses", "LINKPIPE_MAIL_FROM=links@load.example", "AWS_REGION=" + sestest.Region,
			"AWS_ENDPOINT_URL_SESV2=" + url, "AWS_ACCESS_KEY_ID=AKIDLOAD", "AWS_SECRET_ACCESS_KEY=secret-load",
			"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + os.DevNull, "AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
			"LINKPIPE_INBOX_ADDR=127.0.0.1:0"}
	}

	linkKey, ticketKey := randomKey(), randomKey()
	if st.keys, err = link.ParseKeyring("load:" + linkKey); err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	st.redeemerURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	common := []string{"NATS_URL=" + st.natsURL, "LINKPIPE_ADMIN_ADDR=127.0.0.1:0", "LINKPIPE_LOG_LEVEL=info",
		"LINKPIPE_PUBLIC_URL=" + st.redeemerURL}
	workers := []struct {
		name string
		env  []string
	}{
		{"issuer", []string{"LINKPIPE_LINK_KEY=load:" + linkKey}},
		{"mailer", append([]string{"LINKPIPE_LINK_KEY=load:" + linkKey}, mailEnv...)},
		{"redeemer", []string{"LINKPIPE_HTTP_ADDR=" + strings.TrimPrefix(st.redeemerURL, "http://"),
			"LINKPIPE_PORTAL_URL=https://portal.example", "LINKPIPE_TICKET_KEY=" + ticketKey,
			"LINKPIPE_TRUSTED_PROXIES=127.0.0.1/32"}},
	}
	for _, w := range workers {
		env := append(append(append([]string{}, common...), w.env...), "LINKPIPE_DATA_DIR="+filepath.Join(o.dir, w.name))
		ready := make(chan string, 1)
		cmd, err := startProcess(filepath.Join(bin, w.name), nil, env, filepath.Join(o.dir, w.name+".log"), ready)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.name, err)
		}
		cmds = append(cmds, cmd)
		var line string
		select {
		case line = <-ready:
		case <-time.After(time.Minute):
			return nil, fmt.Errorf("%s: no ready line within a minute (see %s)", w.name, filepath.Join(o.dir, w.name+".log"))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		st.procs = append(st.procs, loadProc{w.name, cmd.Process.Pid})
		if w.name == "mailer" && st.sesURL == "" {
			_, inbox, ok := strings.Cut(line, " inbox=")
			if !ok {
				return nil, fmt.Errorf("mailer: ready line %q names no inbox", line)
			}
			st.inboxURL = "http://" + strings.Fields(inbox)[0] + "/inbox"
		}
		fmt.Fprintf(stdout, "%s pid %d: %s\n", w.name, cmd.Process.Pid, line)
		if w.name == "mailer" && st.sesURL != "" {
			reportPacing(ctx, stdout, line, o.sesRate)
		}
	}

	// The practice, then one sign-in through the whole pipeline: the run
	// starts on a warm stack.
	nc, err := nats.Connect(st.natsURL, nats.Name("linkpipe-load-setup"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	sub, err := nc.SubscribeSync(events.LinkSubject("*", events.TypeSent))
	if err != nil {
		return nil, err
	}
	if _, err := events.Publish(ctx, js, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "load-practice", PracticeID: loadPractice},
		Practice: events.Practice{Name: "Load Practice", ReplyTo: "desk@load.example", PortalURL: "https://portal.example"},
	}); err != nil {
		return nil, err
	}
	if _, err := events.Publish(ctx, js, &events.SigninRequested{
		Envelope: events.Envelope{EventID: "load-warmup", PracticeID: loadPractice},
		Client:   events.Client{ID: "warmup", Email: "warmup@example.com"},
	}); err != nil {
		return nil, err
	}
	if _, err := sub.NextMsg(time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up sign-in: no sent event: %w", err)
	}
	return st, nil
}

// goBuild builds pkgs into out (a directory for several) with the go.mod
// of the working directory: linkpipe's repository.
func goBuild(ctx context.Context, out string, pkgs ...string) error {
	if len(pkgs) > 1 {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		out += string(filepath.Separator)
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (run linkpipe load in the repository, or pass -bin and -nats-server): %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// startProcess starts path with args and env (added to this process's),
// its stderr to logPath; when ready is not nil, it receives the first
// stdout line containing " ready ".
func startProcess(path string, args, env []string, logPath string, ready chan<- string) (*exec.Cmd, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	var stdout io.ReadCloser
	if ready != nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		cmd.Wait()
		logf.Close()
	}()
	if ready != nil {
		go func() {
			sc := bufio.NewScanner(stdout)
			sent := false
			for sc.Scan() {
				if !sent && strings.Contains(sc.Text(), " ready ") {
					ready <- sc.Text()
					sent = true
				}
			}
		}()
	}
	return cmd, nil
}

// stopProcess asks cmd to stop (SIGTERM), and kills it after 10s.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
}

func waitForNATS(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nats-server at %s: %w", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on Linux.
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time of process pid so far, from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after its closing parenthesis start with field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc stat times")
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// cutLinkSubject splits links.<link_id>.<type>.
func cutLinkSubject(subject string) (linkID, typ string, ok bool) {
	rest, ok := strings.CutPrefix(subject, "links.")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// getJSON decodes the JSON answer of a GET (an error unless 200 OK).
func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return jsonDecode(resp.Body, v)
}

// startSESLocal starts aws-ses-v2-local (node, from testdeps/, installed
// there by npm ci when missing) on a free loopback port and waits for its
// health check.
func startSESLocal(ctx context.Context, dir string, rate float64) (*exec.Cmd, string, error) {
	cli, err := sestest.FindCLI()
	if err != nil {
		return nil, "", fmt.Errorf("aws-ses-v2-local: %w", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, "", errors.New("aws-ses-v2-local needs node, which is not on PATH")
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	env := []string{"SMTP_TRANSPORT="}
	if rate > 0 {
		env = append(env, "AWS_SES_ACCOUNT="+sestest.LocalAccount(rate))
	}
	cmd, err := startProcess(node, []string{cli, "--host", "127.0.0.1", "--port", strconv.Itoa(port)},
		env, filepath.Join(dir, "aws-ses-v2-local.log"), nil)
	if err != nil {
		return nil, "", fmt.Errorf("aws-ses-v2-local: %w", err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/health-check")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, url, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return cmd, "", fmt.Errorf("aws-ses-v2-local at %s: no health check: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reportPacing says what the mailer made of the emulator's account: the
// rate it sends at and its emails in flight (from its /metrics, whose
// address its ready line names).
func reportPacing(ctx context.Context, stdout io.Writer, ready string, rate float64) {
	account := "no account (GetAccount fails)"
	if rate > 0 {
		account = "MaxSendRate " + strconv.FormatFloat(rate, 'f', -1, 64) + "/s"
	}
	var gauges map[string]string
	if _, admin, ok := strings.Cut(ready, " admin="); ok && len(strings.Fields(admin)) > 0 {
		gauges = scrape(ctx, "http://"+strings.Fields(admin)[0]+"/metrics")
	}
	metric := func(name string) string {
		if v, ok := gauges[name]; ok {
			return v
		}
		return "?"
	}
	pace := "paces by the account's rate of " + metric("linkpipe_ses_max_send_rate") + "/s (less its headroom)"
	if metric("linkpipe_ses_max_send_rate") == "0" {
		pace = "has no rate to pace by"
	}
	fmt.Fprintf(stdout, "SES account: %s; the mailer %s, with %s emails in flight\n",
		account, pace, metric("linkpipe_mailer_concurrency"))
}

// scrape reads the unlabelled samples of a /metrics page, each value
// written as a plain number (nil if the page cannot be read).
func scrape(ctx context.Context, url string) map[string]string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			v = strconv.FormatFloat(f, 'f', -1, 64)
		}
		out[name] = v
	}
	return out
}

// sesCount is how many emails the emulator holds (GET /store).
func sesCount(ctx context.Context, url string) (int, error) {
	var store struct {
		Emails []json.RawMessage `json:"emails"`
	}
	if err := getJSON(ctx, url+"/store", &store); err != nil {
		return 0, fmt.Errorf("aws-ses-v2-local store: %w", err)
	}
	return len(store.Emails), nil
}

// sesCeiling measures the emulator's own rate: n SendEmail calls through
// the mailer's SES client (internal/ses) from each number of concurrent
// senders, and the pipeline's emails/s as a share of the best.
func (r *loadRun) sesCeiling(ctx context.Context, n int, concs ...int) error {
	s, err := ses.New(ctx, func(o *sesv2.Options) {
		o.Region = sestest.Region
		o.BaseEndpoint = aws.String(r.st.sesURL)
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDLOAD", "secret-load", "")
	})
	if err != nil {
		return err
	}
	m, err := mail.Render(&mail.Command{MailID: "L-ceiling-signin", Kind: mail.KindSignin, PracticeID: loadPractice,
		To: events.Client{ID: "ceiling", Email: "ceiling@example.com"}, ValidFrom: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}, practice.Settings{Name: "Load Practice"}, r.st.redeemerURL+"/l/x")
	if err != nil {
		return err
	}
	m.From = "links@load.example"
	best := 0.0
	for _, conc := range concs {
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		t0 := time.Now()
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					if _, err := s.Send(ctx, m); err != nil {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		rate := float64(n) / time.Since(t0).Seconds()
		best = max(best, rate)
		fmt.Fprintf(r.out, "aws-ses-v2-local alone: %d SendEmail from %d senders: %.0f/s; failed %d\n", n, conc, rate, failed.Load())
	}
	fmt.Fprintf(r.out, "  the pipeline's %.0f emails/s are %.0f %% of the emulator's best\n", r.emailsPerSec, 100*r.emailsPerSec/best)
	return nil
}
