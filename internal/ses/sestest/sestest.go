// Package sestest gives tests two SES v2 endpoints for the real
// aws-sdk-go-v2 client: the aws-ses-v2-local emulator (a Node.js process
// from the repository's testdeps/, found by walking up from the working
// directory) and Fake, an httptest server that answers scripted failures
// (throttling, 5xx, MessageRejected) and records what it accepts.
package sestest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/linkpipe/linkpipe/internal/npmdeps"
)

// Region is the region every test endpoint claims.
const Region = "us-east-1"

// options points an SES client at url with fake credentials.
func options(url string) func(*sesv2.Options) {
	return func(o *sesv2.Options) {
		o.Region = Region
		o.BaseEndpoint = aws.String(url)
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret-test", "")
	}
}

// env returns the SDK environment that points a child process at url, and
// keeps it away from the developer's own AWS files and instance metadata.
func env(url string) []string {
	return []string{
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL_SESV2=" + url,
		"AWS_ACCESS_KEY_ID=AKIDTEST",
		"AWS_SECRET_ACCESS_KEY=secret-test",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
	}
}

// Local is a running aws-ses-v2-local.
type Local struct {
	// URL is the emulator's base URL (http://127.0.0.1:port).
	URL string
}

// FindCLI finds testdeps/ above the working directory and returns the
// emulator's cli.js. When testdeps/node_modules is missing (a fresh clone),
// it runs `npm ci` there first (npmdeps.Install: once across test binaries).
func FindCLI() (string, error) {
	deps, err := npmdeps.Find("testdeps")
	if err != nil {
		return "", err
	}
	cli := filepath.Join(deps, "node_modules", "aws-ses-v2-local", "dist", "cli.js")
	if err := npmdeps.Install(deps, cli); err != nil {
		return "", err
	}
	return cli, nil
}

var listening = regexp.MustCompile(`server running at https?://[^:]+:(\d+)`)

// StartLocal starts aws-ses-v2-local on a free loopback port, waits for its
// health check, and stops it with the test. It skips the test, saying why,
// when node or the emulator is not installed.
func StartLocal(t testing.TB) *Local {
	t.Helper()
	cli, err := FindCLI()
	if err != nil {
		t.Skip("aws-ses-v2-local: " + err.Error())
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("aws-ses-v2-local needs node, which is not on PATH")
	}
	// Port 0: the emulator picks a free port and prints it, so there is no
	// window in which another process can take a port we chose.
	cmd := exec.Command(node, cli, "--host", "127.0.0.1", "--port", "0")
	cmd.Env = append(os.Environ(), "SMTP_TRANSPORT=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("aws-ses-v2-local: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	portc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil && !sent {
				portc <- m[1]
				sent = true
			}
		}
		if !sent {
			close(portc)
		}
	}()
	var port string
	select {
	case p, ok := <-portc:
		if !ok {
			t.Fatal("aws-ses-v2-local exited before listening")
		}
		port = p
	case <-time.After(20 * time.Second):
		t.Fatal("aws-ses-v2-local did not start within 20s")
	}
	l := &Local{URL: "http://127.0.0.1:" + port}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(l.URL + "/health-check")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("aws-ses-v2-local health check: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Options points an SES client at the emulator.
func (l *Local) Options() func(*sesv2.Options) { return options(l.URL) }

// Env is the environment that points a child process's SDK at the emulator.
func (l *Local) Env() []string { return env(l.URL) }

// Email is one email as the emulator stores it (GET /store).
type Email struct {
	MessageID   string   `json:"messageId"`
	From        string   `json:"from"`
	ReplyTo     []string `json:"replyTo"`
	Destination struct {
		To []string `json:"to"`
	} `json:"destination"`
	Subject string `json:"subject"`
	Body    struct {
		HTML string `json:"html"`
		Text string `json:"text"`
	} `json:"body"`
	Headers []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"headers"`
	At int64 `json:"at"`
}

// Header returns the value of a header the sender set.
func (e *Email) Header(name string) string {
	for _, h := range e.Headers {
		if http.CanonicalHeaderKey(h.Name) == http.CanonicalHeaderKey(name) {
			return h.Value
		}
	}
	return ""
}

// Emails returns every email the emulator received, oldest first.
func (l *Local) Emails(t testing.TB) []Email {
	t.Helper()
	emails, err := l.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return emails
}

// Fetch is Emails for use outside the test goroutine.
func (l *Local) Fetch(ctx context.Context) ([]Email, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.URL+"/store", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("aws-ses-v2-local /store: %w", err)
	}
	defer resp.Body.Close()
	var store struct {
		Emails []Email `json:"emails"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&store); err != nil {
		return nil, fmt.Errorf("aws-ses-v2-local /store: %w", err)
	}
	return store.Emails, nil
}

// Shape is where a Fault's error code travels. The SDK reads all three
// (smithy-go's restjson1: the X-Amzn-ErrorType header first, then the
// body's "__type", then its "code") and strips a "namespace#" prefix and a
// ":uri" suffix, as real SES answers carry them.
type Shape uint8

// Shapes of an SES v2 error answer.
const (
	// InHeader: X-Amzn-ErrorType: <Code>:http://internal.amazon.com/coral/com.amazonaws.sesv2/
	// with {"message": ...} as the body (what SES v2 itself sends).
	InHeader Shape = iota
	// InType: {"__type": "com.amazonaws.sesv2#<Code>", "message": ...}.
	InType
	// InCode: {"code": "<Code>", "message": ...}.
	InCode
)

// Shapes lists every Shape, for tests that try each.
var Shapes = []Shape{InHeader, InType, InCode}

func (s Shape) String() string {
	switch s {
	case InHeader:
		return "header"
	case InType:
		return "__type"
	case InCode:
		return "code"
	}
	return "unknown"
}

// Fault is one scripted answer of Fake. Status 0 (and no Delay) means
// "accept".
type Fault struct {
	Status int
	// Code is the SES error code (e.g. TooManyRequestsException,
	// MessageRejected), sent as Shape says; empty sends none.
	Code    string
	Message string
	Shape   Shape
	// Delay holds the answer back that long, or until the client gives up
	// (a timeout); with Status 0 the email is then accepted.
	Delay time.Duration
}

// In returns f with its code sent in shape s.
func (f Fault) In(s Shape) Fault { f.Shape = s; return f }

// Common faults, with the status and code real SES v2 answers.
var (
	Throttled = Fault{Status: http.StatusTooManyRequests, Code: "TooManyRequestsException", Message: "Maximum sending rate exceeded."}
	Internal  = Fault{Status: http.StatusInternalServerError, Code: "InternalServiceErrorException", Message: "internal failure"}
	Bare500   = Fault{Status: http.StatusInternalServerError}
	Rejected  = Fault{Status: http.StatusBadRequest, Code: "MessageRejected", Message: "Email address is on the suppression list."}
	// BadAddress is SES's answer to an address it cannot parse.
	BadAddress = Fault{Status: http.StatusBadRequest, Code: "BadRequestException", Message: "Illegal address"}
	// The account-wide refusals an operator fixes.
	SendingPaused  = Fault{Status: http.StatusBadRequest, Code: "SendingPausedException", Message: "Sending is paused for this account."}
	Suspended      = Fault{Status: http.StatusBadRequest, Code: "AccountSuspendedException", Message: "Your account has been suspended."}
	DomainUnproved = Fault{Status: http.StatusBadRequest, Code: "MailFromDomainNotVerifiedException", Message: "The MAIL FROM domain is not verified."}
	NoConfigSet    = Fault{Status: http.StatusNotFound, Code: "NotFoundException", Message: "Configuration set <linkpipe> does not exist."}
	Forbidden      = Fault{Status: http.StatusForbidden, Code: "AccessDeniedException", Message: "User is not authorized to perform ses:SendEmail."}
)

// Received is one email Fake accepted.
type Received struct {
	MessageID string
	From      string
	To        []string
	ReplyTo   []string
	Subject   string
	Text      string
	HTML      string
	Headers   map[string]string
}

// Fake is an SES v2 SendEmail endpoint with scripted failures.
type Fake struct {
	URL string

	mu       sync.Mutex
	script   []Fault
	byTo     map[string]Fault
	always   *Fault
	attempts int
	accepted []Received
}

// NewFake starts a Fake whose first requests get the given faults, in
// order; later requests are accepted. It closes with the test.
func NewFake(t testing.TB, faults ...Fault) *Fake {
	t.Helper()
	f := &Fake{script: append([]Fault(nil), faults...), byTo: map[string]Fault{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// FailTo makes every request to address answer fault, whatever the script.
func (f *Fake) FailTo(address string, fault Fault) {
	f.mu.Lock()
	f.byTo[address] = fault
	f.mu.Unlock()
}

// Always makes every request that neither FailTo nor the script answers
// get fault (an account SES refuses wholesale); Always(Fault{}) accepts
// again.
func (f *Fake) Always(fault Fault) {
	f.mu.Lock()
	if fault == (Fault{}) {
		f.always = nil
	} else {
		f.always = &fault
	}
	f.mu.Unlock()
}

// Script appends faults for the next requests.
func (f *Fake) Script(faults ...Fault) {
	f.mu.Lock()
	f.script = append(f.script, faults...)
	f.mu.Unlock()
}

// Attempts is the number of SendEmail requests received.
func (f *Fake) Attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

// Accepted returns the accepted emails, oldest first.
func (f *Fake) Accepted() []Received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Received(nil), f.accepted...)
}

// Options points an SES client at the fake.
func (f *Fake) Options() func(*sesv2.Options) { return options(f.URL) }

// Env is the environment that points a child process's SDK at the fake.
func (f *Fake) Env() []string { return env(f.URL) }

type content struct {
	Data string `json:"Data"`
}

type sendEmail struct {
	FromEmailAddress string
	Destination      struct{ ToAddresses []string }
	ReplyToAddresses []string
	Content          struct {
		Simple *struct {
			Subject content
			Body    struct {
				Text *content
				Html *content
			}
			Headers []struct{ Name, Value string }
		}
	}
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v2/email/outbound-emails" {
		http.Error(w, `{"message":"unknown operation"}`, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var in sendEmail
	if err := json.Unmarshal(body, &in); err != nil || in.Content.Simple == nil {
		writeFault(w, Fault{Status: http.StatusBadRequest, Code: "BadRequestException", Message: "malformed request"})
		return
	}
	f.mu.Lock()
	f.attempts++
	fault, found := Fault{}, false
	for _, to := range in.Destination.ToAddresses {
		if ft, ok := f.byTo[to]; ok {
			fault, found = ft, true
		}
	}
	if !found && len(f.script) > 0 {
		fault, f.script, found = f.script[0], f.script[1:], true
	}
	if !found && f.always != nil {
		fault = *f.always
	}
	f.mu.Unlock()
	if fault.Delay > 0 {
		select {
		case <-time.After(fault.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if fault.Status != 0 {
		writeFault(w, fault)
		return
	}
	f.mu.Lock()
	s := in.Content.Simple
	rec := Received{
		MessageID: "fake-" + strconv.Itoa(len(f.accepted)+1),
		From:      in.FromEmailAddress, To: in.Destination.ToAddresses, ReplyTo: in.ReplyToAddresses,
		Subject: s.Subject.Data, Headers: map[string]string{},
	}
	if s.Body.Text != nil {
		rec.Text = s.Body.Text.Data
	}
	if s.Body.Html != nil {
		rec.HTML = s.Body.Html.Data
	}
	for _, h := range s.Headers {
		rec.Headers[h.Name] = h.Value
	}
	f.accepted = append(f.accepted, rec)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"MessageId":%q}`, rec.MessageID)
}

func writeFault(w http.ResponseWriter, f Fault) {
	body := map[string]string{"message": f.Message}
	if f.Code != "" {
		switch f.Shape {
		case InHeader:
			w.Header().Set("X-Amzn-ErrorType", f.Code+":http://internal.amazon.com/coral/com.amazonaws.sesv2/")
		case InType:
			body["__type"] = "com.amazonaws.sesv2#" + f.Code
		case InCode:
			body["code"] = f.Code
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	msg, _ := json.Marshal(body)
	w.Write(msg)
}

// LocalAccount is an AWS_SES_ACCOUNT for aws-ses-v2-local (its GetAccount
// serves it, after checking it against its schema): a production account
// sending at most maxSendRate emails/s.
func LocalAccount(maxSendRate float64) string {
	return `{"DedicatedIpAutoWarmupEnabled":false,"Details":{"AdditionalContactEmailAddresses":[],` +
		`"ContactLanguage":"EN","MailType":"TRANSACTIONAL","ReviewDetails":{"CaseId":"c","Status":"GRANTED"},` +
		`"UseCaseDescription":"links","WebsiteURL":"https://clinic.example"},"EnforcementStatus":"HEALTHY",` +
		`"ProductionAccessEnabled":true,"SendingEnabled":true,` +
		`"SendQuota":{"Max24HourSend":` + strconv.FormatFloat(max(50000, maxSendRate*86400), 'f', -1, 64) +
		`,"MaxSendRate":` + strconv.FormatFloat(maxSendRate, 'f', -1, 64) + `,"SentLast24Hours":0},` +
		`"SuppressionAttributes":{"SuppressedReasons":[]}}`
}
