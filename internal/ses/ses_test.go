package ses_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

func message() *mail.Message {
	return &mail.Message{
		From: "links@clinic.example", To: "pat@example.com", ReplyTo: "desk@clinic.example",
		Subject: "Your sign-in link for Caf\u00e9 Clinic (valid until Tue 24 Nov, 14:05 UTC)",
		Text:    "Hello Pat,\nhttps://links.example/l/k1.abc\n",
		HTML:    `<p>Hello Pat, <a href="https://links.example/l/k1.abc">Sign in</a></p>`,
		Headers: map[string]string{mail.HeaderEntityRefID: "Labc-signin", mail.HeaderMailID: "Labc-signin"},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// isolate keeps the developer's AWS files and variables out of the test.
func isolate(t *testing.T) {
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestSendThroughAWSSESV2Local(t *testing.T) {
	isolate(t)
	local := sestest.StartLocal(t)
	s, err := ses.New(ctx(t), local.Options())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Send(ctx(t), message())
	if err != nil {
		t.Fatal(err)
	}
	emails := local.Emails(t)
	if len(emails) != 1 {
		t.Fatalf("%d emails in /store, want 1", len(emails))
	}
	e := emails[0]
	want := message()
	if e.MessageID != id || id == "" {
		t.Errorf("message id %q, SES said %q", e.MessageID, id)
	}
	if e.From != want.From || len(e.Destination.To) != 1 || e.Destination.To[0] != want.To {
		t.Errorf("from %q to %v", e.From, e.Destination.To)
	}
	if len(e.ReplyTo) != 1 || e.ReplyTo[0] != want.ReplyTo {
		t.Errorf("reply-to %v", e.ReplyTo)
	}
	if e.Subject != want.Subject || e.Body.Text != want.Text || e.Body.HTML != want.HTML {
		t.Errorf("content: %q / %q / %q", e.Subject, e.Body.Text, e.Body.HTML)
	}
	if e.Header(mail.HeaderEntityRefID) != "Labc-signin" {
		t.Errorf("headers %v", e.Headers)
	}
}

func TestNoReplyToWithoutPracticeAddress(t *testing.T) {
	isolate(t)
	fake := sestest.NewFake(t)
	s, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	m.ReplyTo = ""
	m.Subject = "hi\r\nBcc: evil@example.com"
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	got := fake.Accepted()[0]
	if len(got.ReplyTo) != 0 || got.Subject != "hi Bcc: evil@example.com" {
		t.Errorf("reply-to %v subject %q", got.ReplyTo, got.Subject)
	}
}

func TestClassificationAndRetryAfterTransientFailures(t *testing.T) {
	isolate(t)
	fake := sestest.NewFake(t, sestest.Throttled, sestest.Internal, sestest.Bare500,
		sestest.Fault{Status: 503, Code: "ServiceUnavailable"})
	s, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	// Each Send is one HTTP attempt: the SDK retryer is off, the mailer
	// owns backoff.
	for i, want := range []error{mail.ErrThrottled, mail.ErrTransient, mail.ErrTransient, mail.ErrTransient} {
		_, err := s.Send(ctx(t), message())
		if !errors.Is(err, want) || mail.IsPermanent(err) {
			t.Fatalf("attempt %d: got %v, want %v", i+1, err, want)
		}
		if fake.Attempts() != i+1 {
			t.Fatalf("attempt %d: the server saw %d requests (SDK retried?)", i+1, fake.Attempts())
		}
	}
	if len(fake.Accepted()) != 0 {
		t.Fatal("accepted during faults")
	}
	id, err := s.Send(ctx(t), message())
	if err != nil || id != "fake-1" {
		t.Fatalf("retry after transient failures: %q %v", id, err)
	}
	if n := len(fake.Accepted()); n != 1 {
		t.Fatalf("%d accepted, want 1", n)
	}
}

// Each answer SES v2 gives, in each shape the SDK parses, through the real
// sesv2 client: only a refusal of the one email is permanent; throttling,
// 5xx and timeouts are transient, and what an operator must fix (a paused
// or suspended account, an unverified domain, a missing configuration set,
// refused credentials) is ErrRefused, transient too.
func TestClassifyEachSESAnswer(t *testing.T) {
	isolate(t)
	const (
		throttled = "throttled"
		transient = "transient"
		refused   = "refused"
		permanent = "permanent"
	)
	cases := []struct {
		name  string
		fault sestest.Fault
		want  string
	}{
		{"429 TooManyRequests", sestest.Throttled, throttled},
		{"400 Throttling", sestest.Fault{Status: 400, Code: "Throttling", Message: "Rate exceeded"}, throttled},
		{"400 LimitExceeded", sestest.Fault{Status: 400, Code: "LimitExceededException"}, throttled},
		{"500 InternalServiceError", sestest.Internal, transient},
		{"500 bare", sestest.Bare500, transient},
		{"503 ServiceUnavailable", sestest.Fault{Status: 503, Code: "ServiceUnavailable"}, transient},
		{"timeout", sestest.Fault{Status: 200, Delay: time.Minute}, transient},
		{"400 unknown", sestest.Fault{Status: 400, Code: "SomethingNewException"}, transient},
		{"400 bare", sestest.Fault{Status: 400}, transient},
		{"408", sestest.Fault{Status: 408}, transient},
		{"SendingPaused", sestest.SendingPaused, refused},
		{"AccountSuspended", sestest.Suspended, refused},
		{"MailFromDomainNotVerified", sestest.DomainUnproved, refused},
		{"configuration set missing", sestest.NoConfigSet, refused},
		{"ConfigurationSetDoesNotExist", sestest.Fault{Status: 400, Code: "ConfigurationSetDoesNotExist"}, refused},
		{"403 AccessDenied", sestest.Forbidden, refused},
		{"403 SignatureDoesNotMatch", sestest.Fault{Status: 403, Code: "SignatureDoesNotMatch"}, refused},
		{"401 bare", sestest.Fault{Status: 401}, refused},
		{"MessageRejected", sestest.Rejected, permanent},
		{"bad address", sestest.BadAddress, permanent},
		{"400 InvalidParameterValue", sestest.Fault{Status: 400, Code: "InvalidParameterValue", Message: "Missing final '@domain'"}, permanent},
	}
	for _, c := range cases {
		shapes := sestest.Shapes
		if c.fault.Code == "" {
			shapes = shapes[:1]
		}
		for _, shape := range shapes {
			t.Run(c.name+"/"+shape.String(), func(t *testing.T) {
				fake := sestest.NewFake(t, c.fault.In(shape))
				s, err := ses.New(ctx(t), fake.Options())
				if err != nil {
					t.Fatal(err)
				}
				sendCtx := ctx(t)
				if c.fault.Delay > 0 {
					var cancel context.CancelFunc
					sendCtx, cancel = context.WithTimeout(sendCtx, 200*time.Millisecond)
					defer cancel()
				}
				_, err = s.Send(sendCtx, message())
				got := ""
				switch {
				case err == nil:
					got = "accepted"
				case errors.Is(err, mail.ErrThrottled):
					got = throttled
				case errors.Is(err, mail.ErrRefused):
					got = refused
				case errors.Is(err, mail.ErrTransient):
					got = transient
				case mail.IsPermanent(err):
					got = permanent
				}
				if got != c.want {
					t.Errorf("got %s (%v), want %s", got, err, c.want)
				}
				if err != nil && mail.IsPermanent(err) == errors.Is(err, mail.ErrTransient) {
					t.Errorf("%v: must be exactly one of permanent and transient", err)
				}
				if c.fault.Code != "" && err != nil && !strings.Contains(err.Error(), c.fault.Code) {
					t.Errorf("error %q does not name the code %s", err, c.fault.Code)
				}
				if fake.Attempts() != 1 {
					t.Errorf("%d attempts, want 1 (the SDK retryer is off)", fake.Attempts())
				}
			})
		}
	}
}

func TestNetworkErrorIsTransient(t *testing.T) {
	isolate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nobody listens there now: connection refused
	fake := sestest.NewFake(t)
	s, err := ses.New(ctx(t), fake.Options(), func(o *sesv2.Options) { o.BaseEndpoint = aws.String(dead) })
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if !errors.Is(err, mail.ErrTransient) || mail.IsPermanent(err) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connection refused: %v", err)
	}
}

func TestNewNeedsARegion(t *testing.T) {
	isolate(t)
	if _, err := ses.New(ctx(t)); !errors.Is(err, ses.ErrNoRegion) {
		t.Fatalf("got %v, want ErrNoRegion", err)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	if _, err := ses.New(ctx(t)); err != nil {
		t.Fatalf("AWS_REGION set: %v", err)
	}
}

// An SES error names no address, not even when SES's message quotes it,
// and keeps what the mailer needs to know (permanent or not, the code).
func TestErrorsNameNoAddress(t *testing.T) {
	isolate(t)
	fake := sestest.NewFake(t)
	fake.FailTo("pat@example.com", sestest.Fault{Status: 400, Code: "MessageRejected",
		Message: "Email address is not verified. The following identities failed the check in region US-EAST-1: pat@example.com"})
	s, err := ses.New(ctx(t), fake.Options())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if !mail.IsPermanent(err) {
		t.Fatalf("got %v, want permanent", err)
	}
	if text := err.Error(); strings.Contains(text, "@") || !strings.Contains(text, "MessageRejected") {
		t.Fatalf("error text %q: want the code and no address", text)
	}
	fake.FailTo("pat@example.com", sestest.Fault{Status: 500, Code: "InternalFailure", Message: "could not reach pat@example.com"})
	if _, err := s.Send(ctx(t), message()); !errors.Is(err, mail.ErrTransient) || strings.Contains(err.Error(), "@") {
		t.Fatalf("transient: %v", err)
	}
}
