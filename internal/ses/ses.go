// Package ses owns sending email through Amazon SES v2 (SendEmail with
// Simple content) with aws-sdk-go-v2, and the classification of SES errors
// into the mail package's sentinels: mail.ErrThrottled (throttling),
// mail.ErrRefused (the account refuses every send until an operator acts),
// mail.ErrTransient (5xx, network, timeouts) and mail.ErrPermanent (this
// one email or its address is refused for good).
//
// Configuration is the SDK's own: New uses config.LoadDefaultConfig, so
// AWS_REGION, AWS_ENDPOINT_URL_SESV2 (an emulator such as aws-ses-v2-local),
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, shared
// config files, SSO and instance roles work exactly as the SDK documents.
//
// Retries: the SDK's own retryer is switched off (one HTTP attempt per
// Send). The mailer owns retrying: it puts the message back on its queue
// with a growing delay (JetStream NakWithDelay), which frees the worker
// while it waits, survives a restart, shows in metrics, and avoids two
// layers of backoff multiplying each other under throttling. AWS_MAX_ATTEMPTS
// and AWS_RETRY_MODE are therefore ignored; pass an option to New to
// override (e.g. to restore the SDK retryer).
package ses

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/linkpipe/linkpipe/internal/mail"
)

// Sender sends email through SES v2. It is safe for concurrent use.
type Sender struct {
	client *sesv2.Client
	// configurationSet names the SES configuration set (feedback.go).
	configurationSet string
}

// ErrNoRegion: neither AWS_REGION nor the shared config names a region.
var ErrNoRegion = errors.New("ses: no AWS region (set AWS_REGION)")

// New loads the SDK's default configuration and returns a Sender. opts
// adjust the SES client (region, endpoint, credentials, HTTP client,
// retryer); they apply after linkpipe's defaults.
func New(ctx context.Context, opts ...func(*sesv2.Options)) (*Sender, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("ses: aws config: %w", err)
	}
	all := make([]func(*sesv2.Options), 0, len(opts)+1)
	all = append(all, func(o *sesv2.Options) { o.Retryer = aws.NopRetryer{} })
	all = append(all, opts...)
	client := sesv2.NewFromConfig(cfg, all...)
	if client.Options().Region == "" {
		return nil, ErrNoRegion
	}
	return &Sender{client: client}, nil
}

// Send sends m and returns SES's message id. Its error wraps
// mail.ErrPermanent, mail.ErrThrottled or mail.ErrTransient (see Classify);
// its text names no address (mail.Scrub).
func (s *Sender) Send(ctx context.Context, m *mail.Message) (string, error) {
	msg := *m
	msg.Headers = make(map[string]string, len(m.Headers))
	for k, v := range m.Headers {
		msg.Headers[k] = v
	}
	msg.Sanitize()
	if msg.From == "" || msg.To == "" {
		return "", fmt.Errorf("ses: %w: message without From or To", mail.ErrPermanent)
	}
	utf8 := aws.String("UTF-8")
	simple := &types.Message{
		Subject: &types.Content{Data: aws.String(msg.Subject), Charset: utf8},
		Body:    &types.Body{},
	}
	if msg.Text != "" {
		simple.Body.Text = &types.Content{Data: aws.String(msg.Text), Charset: utf8}
	}
	if msg.HTML != "" {
		simple.Body.Html = &types.Content{Data: aws.String(msg.HTML), Charset: utf8}
	}
	names := make([]string, 0, len(msg.Headers))
	for k := range msg.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if v := msg.Headers[k]; v != "" {
			simple.Headers = append(simple.Headers, types.MessageHeader{Name: aws.String(k), Value: aws.String(v)})
		}
	}
	in := &sesv2.SendEmailInput{
		FromEmailAddress: aws.String(msg.From),
		Destination:      &types.Destination{ToAddresses: []string{msg.To}},
		Content:          &types.EmailContent{Simple: simple},
	}
	if msg.ReplyTo != "" {
		in.ReplyToAddresses = []string{msg.ReplyTo}
	}
	s.feedbackFields(in, &msg)
	out, err := s.client.SendEmail(ctx, in)
	if err != nil {
		// Never the recipient: errors reach logs and lifecycle events. SES's
		// own message may quote it, so its text is scrubbed too.
		return "", fmt.Errorf("ses: send: %w", mail.ScrubError(Classify(err)))
	}
	return aws.ToString(out.MessageId), nil
}

// isPermanentCode reports the error codes SES answers for an email that
// will never be accepted as it is: the message or the address is refused,
// or the request about it is invalid.
func isPermanentCode(code string) bool {
	switch code {
	case "MessageRejected", "MessageRejectedException", "BadRequestException",
		"InvalidParameterValue", "InvalidParameterValueException", "ValidationException":
		return true
	}
	return false
}

// isRefusedCode reports the error codes by which SES refuses every send
// until an operator acts: the account's sending is paused or suspended,
// the MAIL FROM domain is not verified, the configuration set (or another
// resource the request names) does not exist, or the credentials are
// refused.
func isRefusedCode(code string) bool {
	switch code {
	case "SendingPausedException", "AccountSuspendedException", "MailFromDomainNotVerifiedException",
		"ConfigurationSetSendingPausedException", "ConfigurationSetDoesNotExist",
		"ConfigurationSetDoesNotExistException", "NotFoundException",
		"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId",
		"SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken",
		"ExpiredToken", "ExpiredTokenException", "InvalidSignatureException":
		return true
	}
	return false
}

// Classify wraps an SES error in the mail sentinel that says what to do:
//
//   - mail.ErrThrottled: HTTP 429, TooManyRequestsException, Throttling*,
//     LimitExceededException and the SDK's other throttle codes.
//   - mail.ErrRefused (transient): SendingPausedException,
//     AccountSuspendedException, MailFromDomainNotVerifiedException, a
//     missing configuration set (NotFoundException,
//     ConfigurationSetDoesNotExist), refused credentials (HTTP 401, 403,
//     AccessDenied, SignatureDoesNotMatch, ...): every send fails until an
//     operator fixes the account, after which the same email succeeds.
//   - mail.ErrPermanent: a refusal of this one email: MessageRejected,
//     BadRequestException (e.g. an address SES cannot parse), validation
//     errors.
//   - mail.ErrTransient: 5xx, 408, network errors, timeouts, and anything
//     unrecognised, including other 4xx (a retry costs a delay, a wrong
//     "permanent" costs an email; the mailer's attempt budget ends it).
func Classify(err error) error {
	if err == nil {
		return nil
	}
	code := ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.Response != nil {
		status = respErr.HTTPStatusCode()
	}
	var sentinel error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		sentinel = mail.ErrTransient
	case status == http.StatusTooManyRequests || isThrottleCode(code):
		sentinel = mail.ErrThrottled
	case isRefusedCode(code):
		sentinel = mail.ErrRefused
	case isPermanentCode(code):
		sentinel = mail.ErrPermanent
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		sentinel = mail.ErrRefused
	default:
		sentinel = mail.ErrTransient
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

func isThrottleCode(code string) bool {
	if code == "" {
		return false
	}
	if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
		return true
	}
	return strings.HasPrefix(code, "Throttl") || code == "LimitExceededException" || code == "TooManyRequestsException"
}
